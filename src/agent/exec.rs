//! The built-in agents. `agent exec -- CMD` runs a command per message (text on stdin,
//! reply on stdout), so any CLI can answer texts; `agent echo` replies with what it got.
//! Both reconnect when the gateway restarts; the gateway redelivers whatever they had
//! not acknowledged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Semaphore};

/// What answers each message.
#[derive(Debug, Clone)]
pub enum Responder {
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
}

fn parse_message(v: &Value) -> Option<Incoming> {
    let m = crate::agent::protocol::InboundMessage::from_value(v)?;
    Some(Incoming {
        conversation: m.conversation_key(),
        media: m.media.len(),
        id: m.id,
        account: m.account,
        from: m.from,
        to: m.to,
        text: m.text,
    })
}

/// Connects to `socket` and answers messages until `stop` resolves; reconnects after a
/// lost connection.
pub async fn run(
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
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
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
                Some(text) => json!({"type": "reply", "id": msg.id, "text": text}),
                None => json!({"type": "ack", "id": msg.id}),
            };
            if out.send(line.to_string()).is_err() {
                return;
            }
        }
    });
    tx
}

/// The reply text, or `None` to acknowledge without replying.
async fn answer(responder: &Responder, msg: &Incoming) -> Option<String> {
    match responder {
        Responder::Echo => {
            if msg.text.trim().is_empty() {
                (msg.media > 0).then(|| format!("(received {} attachment(s))", msg.media))
            } else {
                Some(msg.text.clone())
            }
        }
        Responder::Command { argv, timeout } => run_command(argv, *timeout, msg).await,
    }
}

async fn run_command(argv: &[String], timeout: Duration, msg: &Incoming) -> Option<String> {
    let (program, args) = argv.split_first()?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("SMS_FROM", &msg.from)
        .env("SMS_TO", &msg.to)
        .env("SMS_ACCOUNT", &msg.account)
        .env("SMS_MESSAGE_ID", &msg.id)
        .env("SMS_CONVERSATION", &msg.conversation)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(id = %msg.id, "cannot run {program:?}: {e}; message acknowledged without a reply");
            return None;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let text = msg.text.clone();
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
        });
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            tracing::error!(id = %msg.id, "{program:?} did not finish within {}s; killed, message acknowledged without a reply", timeout.as_secs());
            None
        }
        Ok(Err(e)) => {
            tracing::error!(id = %msg.id, "{program:?} failed: {e}; message acknowledged without a reply");
            None
        }
        Ok(Ok(out)) if !out.status.success() => {
            tracing::error!(id = %msg.id, "{program:?} exited with {}; message acknowledged without a reply", out.status);
            None
        }
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!text.is_empty()).then_some(text)
        }
    }
}
