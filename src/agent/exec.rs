//! The built-in agents. `agent exec -- CMD` runs a command per message (text on stdin,
//! reply on stdout), so any CLI can answer texts; `agent echo` replies with what it got.
//! Both reconnect when the gateway restarts; the gateway redelivers whatever they had
//! not acknowledged. A command that cannot start, exits non-zero or times out has not
//! handled the message: it gets `fail` (retry), never `ack` (CONTRACT §11), so the
//! gateway asks again later and, after 5 failures, keeps it in the dead letters.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Semaphore};

/// What answers each message.
#[derive(Debug, Clone)]
pub(crate) enum Responder {
    Echo,
    Command {
        argv: Vec<String>,
        timeout: Duration,
    },
}

/// One message as the agent sees it.
#[derive(Debug, Clone)]
struct Incoming {
    id: String,
    account: String,
    from: String,
    to: String,
    text: String,
    media: usize,
    conversation: String,
    /// `sms` or `whatsapp` (CONTRACT §12).
    channel: String,
}

fn parse_message(v: &Value) -> Option<Incoming> {
    let m = crate::agent::protocol::InboundMessage::from_value(v)?;
    Some(Incoming {
        conversation: m.conversation_key(),
        channel: m.channel.clone().unwrap_or_else(|| "sms".into()),
        media: m.media.len(),
        id: m.id,
        account: m.account,
        from: m.from,
        to: m.to,
        text: m.text,
    })
}

/// Checks, before connecting, that `argv`'s program can be run: it exists (as a path,
/// or in `PATH` for a bare name), is a file, and is executable by us. The error names
/// the program and what is wrong with it.
pub(crate) fn check_runnable(argv: &[String]) -> Result<PathBuf, String> {
    let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
        return Err("no command given: use `smsgate agent exec -- CMD [ARGS…]`".into());
    };
    let runnable = |p: &std::path::Path| -> Result<(), String> {
        let meta = std::fs::metadata(p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            _ => e.to_string(),
        })?;
        if meta.is_dir() {
            return Err("it is a directory".into());
        }
        rustix::fs::access(p, rustix::fs::Access::EXEC_OK)
            .map_err(|_| "it is not executable (chmod +x, or run it through its interpreter: `-- sh script.sh`)".to_string())
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return runnable(&path)
            .map(|()| path)
            .map_err(|why| format!("cannot run {program:?}: {why}"));
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut found_unusable = None;
    for dir in std::env::split_paths(&path_var) {
        // An empty PATH entry means the current directory.
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        match runnable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(why) if candidate.exists() => {
                found_unusable.get_or_insert(format!("{}: {why}", candidate.display()));
            }
            Err(_) => {}
        }
    }
    Err(match found_unusable {
        Some(why) => format!("cannot run {program:?}: {why}"),
        None => format!("cannot run {program:?}: not found in PATH"),
    })
}

/// Connects to `socket` and answers messages until `stop` resolves; reconnects after a
/// lost connection.
pub(crate) async fn run(
    socket: PathBuf,
    responder: Responder,
    max_concurrent: usize,
    mut stop: crate::shutdown::Shutdown,
) {
    let limit = Arc::new(Semaphore::new(max_concurrent.max(1)));
    super::connect_loop(&socket, "the agent", &mut stop, |stream| {
        session(stream, &responder, limit.clone())
    })
    .await;
}

async fn session(stream: UnixStream, responder: &Responder, limit: Arc<Semaphore>) {
    let (read, mut write) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(mut line) = out_rx.recv().await {
            line.push('\n');
            if write.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let kind = match responder {
        Responder::Echo => "echo",
        Responder::Command { .. } => "exec",
    };
    let _ = out_tx.send(super::protocol::hello_line(kind));
    // One worker per sender keeps each sender's messages in order, one at a time.
    let mut workers: HashMap<(String, String), mpsc::UnboundedSender<Incoming>> = HashMap::new();
    // Bounded like the daemon's side of the socket (see `crate::lines`).
    let mut lines = crate::lines::Lines::new(read, crate::agent::protocol::MAX_LINE);
    while let Ok(Some(line)) = lines.next().await {
        let crate::lines::Line::Text(line) = line else {
            tracing::warn!("unreadable line from the gateway (too long or not UTF-8); skipped");
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!("unreadable line from the gateway");
            continue;
        };
        match v.get("type").and_then(Value::as_str) {
            Some("message") => {
                let Some(msg) = parse_message(&v) else {
                    continue;
                };
                let key = (msg.account.clone(), msg.from.clone());
                let tx = workers.entry(key).or_insert_with(|| {
                    spawn_worker(responder.clone(), limit.clone(), out_tx.clone())
                });
                if let Err(mpsc::error::SendError(msg)) = tx.send(msg) {
                    let key = (msg.account.clone(), msg.from.clone());
                    let tx = spawn_worker(responder.clone(), limit.clone(), out_tx.clone());
                    let _ = tx.send(msg);
                    workers.insert(key, tx);
                }
            }
            Some("sent") => tracing::info!("sent: {}", v),
            Some("error") => {
                let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("?");
                tracing::warn!("gateway error: {message}");
            }
            Some("status") => tracing::debug!("delivery status: {}", v),
            _ => {}
        }
    }
    drop(workers);
    writer.abort();
}

fn spawn_worker(
    responder: Responder,
    limit: Arc<Semaphore>,
    out: mpsc::UnboundedSender<String>,
) -> mpsc::UnboundedSender<Incoming> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Incoming>();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let Ok(_permit) = limit.acquire().await else {
                return;
            };
            let line = match answer(&responder, &msg).await {
                Ok(Answer { text: None, media }) if media.is_empty() => {
                    json!({"type": "ack", "id": msg.id}).to_string()
                }
                Ok(Answer { text, media }) => {
                    let mut line =
                        json!({"type": "reply", "id": msg.id, "text": text.unwrap_or_default()});
                    if !media.is_empty() {
                        line["media"] = Value::Array(media);
                    }
                    line.to_string()
                }
                Err(e) => super::protocol::fail_line(&msg.id, &e, true),
            };
            if out.send(line).is_err() {
                return;
            }
        }
    });
    tx
}

/// What answers a message: its text (`None`, and no media: acknowledge without
/// replying) and the media items of the reply line (`{data, filename}`).
struct Answer {
    text: Option<String>,
    media: Vec<Value>,
}

/// The answer, or why the message was not handled (it gets `fail`).
async fn answer(responder: &Responder, msg: &Incoming) -> Result<Answer, String> {
    match responder {
        Responder::Echo => Ok(Answer {
            text: if msg.text.trim().is_empty() {
                (msg.media > 0).then(|| format!("(received {} attachment(s))", msg.media))
            } else {
                Some(msg.text.clone())
            },
            media: Vec::new(),
        }),
        Responder::Command { argv, timeout } => {
            let outbox = Outbox::create().map_err(|e| {
                let why = format!("cannot create the SMS_OUTBOX directory: {e}");
                tracing::error!(id = %msg.id, "{why}; the gateway will deliver the message again later");
                why
            })?;
            let text = run_command(argv, *timeout, msg, &outbox.0).await?;
            Ok(Answer {
                text,
                media: outbox.media(),
            })
        }
    }
}

/// The directory named by `SMS_OUTBOX` for one run (CONTRACT §10): fresh, empty and
/// owner-only; the files the command leaves in it are attached to the reply; removed
/// when dropped.
struct Outbox(PathBuf);

impl Outbox {
    fn create() -> std::io::Result<Self> {
        use rand::Rng;
        use std::os::unix::fs::DirBuilderExt;
        let name = format!("smsgate-outbox-{:016x}", rand::thread_rng().gen::<u64>());
        let dir = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Self(dir))
    }

    /// The regular files left in the directory, by name, as media items: at most one
    /// more than the daemon takes (so it says there are too many) and each read to at
    /// most one byte over `mediaMaxMb`'s maximum (so it says which is too big); symlinks
    /// and directories are skipped (the command's own files only).
    fn media(&self) -> Vec<Value> {
        use base64::Engine as _;
        use std::io::Read as _;
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return Vec::new();
        };
        let mut files: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        files.sort();
        files.truncate(crate::mms::MAX_ITEMS + 1);
        let mut out = Vec::new();
        for (name, path) in files {
            let mut data = Vec::new();
            let read = std::fs::File::open(&path)
                .and_then(|f| f.take(crate::mms::MAX_BYTES + 1).read_to_end(&mut data));
            if let Err(e) = read {
                tracing::warn!("cannot read {name} from SMS_OUTBOX: {e}; not attached");
                continue;
            }
            out.push(json!({
                "data": base64::engine::general_purpose::STANDARD.encode(&data),
                "filename": name,
            }));
        }
        out
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run_command(
    argv: &[String],
    timeout: Duration,
    msg: &Incoming,
    outbox: &std::path::Path,
) -> Result<Option<String>, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no command to run".into());
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("SMS_FROM", &msg.from)
        .env("SMS_TO", &msg.to)
        .env("SMS_ACCOUNT", &msg.account)
        .env("SMS_MESSAGE_ID", &msg.id)
        .env("SMS_CONVERSATION", &msg.conversation)
        .env("SMS_CHANNEL", &msg.channel)
        .env("SMS_OUTBOX", outbox)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let failed = |why: String| {
        tracing::error!(id = %msg.id, "{why}; the gateway will deliver the message again later");
        Err(why)
    };
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot run {program:?}: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let text = msg.text.clone();
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
        });
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => failed(format!(
            "{program:?} did not finish within {} s and was killed",
            timeout.as_secs()
        )),
        Ok(Err(e)) => failed(format!("{program:?} failed: {e}")),
        Ok(Ok(out)) if !out.status.success() => {
            failed(format!("{program:?} exited with {}", out.status))
        }
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok((!text.is_empty()).then_some(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_runnable_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = dir.path().join("plain.txt");
        std::fs::write(&plain, "x").expect("write");
        let script = dir.path().join("run.sh");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let s = |p: &std::path::Path| p.display().to_string();
        let cases: Vec<(Vec<String>, Result<(), &str>)> = vec![
            (vec![], Err("no command given")),
            (vec![String::new()], Err("no command given")),
            (
                vec!["/nonexistent".into()],
                Err("\"/nonexistent\": no such file"),
            ),
            (vec![s(dir.path())], Err("is a directory")),
            (vec![s(&plain)], Err("not executable")),
            (vec![s(&script), "arg".into()], Ok(())),
            (vec!["sh".into(), "-c".into(), "true".into()], Ok(())),
            (
                vec!["surely-no-such-command-xyz".into()],
                Err("not found in PATH"),
            ),
        ];
        for (argv, want) in cases {
            let got = check_runnable(&argv);
            match want {
                Ok(()) => assert!(got.is_ok(), "{argv:?}: {got:?}"),
                Err(needle) => {
                    let e = got.expect_err("refused");
                    assert!(e.contains(needle), "{argv:?}: {e}");
                }
            }
        }
    }
}
