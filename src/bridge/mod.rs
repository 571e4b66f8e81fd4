//! The built-in bridges (CONTRACT §7): `agent acp` (an Agent Client Protocol agent on
//! stdin/stdout) and `agent openai` (an OpenAI-compatible chat-completions server).
//! Both are ordinary agents on the socket: this module connects, keeps one worker per
//! conversation (turns of one conversation run one at a time, conversations run side
//! by side), coalesces bursts, applies the cost guard, and writes each turn's reply
//! before the acks of the texts it answered. The backends only turn a [`Turn`] into a
//! reply text.

pub mod acp;
pub mod guard;
pub mod openai;
pub mod state;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::agent::protocol::InboundMessage;
use crate::shutdown::Shutdown;

/// What both bridges take besides their own options.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--coalesce MS`: 0 = every text is its own turn.
    pub coalesce_ms: u64,
    /// `--max-chars N`: the cost guard.
    pub max_chars: usize,
}

/// One or more texts of one conversation that become one prompt.
#[derive(Debug, Clone)]
pub struct Turn {
    pub conversation: String,
    pub texts: Vec<InboundMessage>,
}

impl Turn {
    /// The prompt: the texts joined by newlines.
    pub fn prompt(&self) -> String {
        guard::join_texts(self.texts.iter().map(|m| m.text.as_str()))
    }

    /// The prompt for a model that cannot see attachments: the texts, and a note of
    /// what was attached (a bare picture is not an empty prompt).
    pub fn prompt_noting_media(&self) -> String {
        let media: Vec<&str> = self
            .texts
            .iter()
            .flat_map(|m| &m.media)
            .map(|m| m.content_type.as_str())
            .collect();
        let mut text = self.prompt();
        if !media.is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&format!("[attached: {}]", media.join(", ")));
        }
        text
    }

    /// The ids, oldest first.
    pub fn ids(&self) -> Vec<String> {
        self.texts.iter().map(|m| m.id.clone()).collect()
    }

    /// The conversation as it may appear in a log line (a fallback key holds a number).
    pub fn log_name(&self) -> String {
        crate::phone::redact_numbers_in(&self.conversation)
    }
}

/// The model behind a bridge.
pub enum Backend {
    Acp(Arc<acp::AcpBridge>),
    OpenAi(Arc<openai::OpenAiBridge>),
}

impl Backend {
    /// The reply to a turn, or `None` to acknowledge without replying. Backends wait
    /// (retrying) rather than give up on a message that must not be lost.
    async fn answer(&self, turn: &Turn) -> Option<String> {
        match self {
            Backend::Acp(b) => b.answer(turn).await,
            Backend::OpenAi(b) => b.answer(turn).await,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Backend::Acp(_) => "acp",
            Backend::OpenAi(_) => "openai",
        }
    }
}

struct Text {
    msg: InboundMessage,
    arrived: Instant,
}

/// Connects to `socket` and answers messages until `stop` resolves; reconnects every
/// second while the gateway is away (it redelivers whatever was not acknowledged).
pub async fn run(socket: PathBuf, backend: Backend, settings: Settings, mut stop: Shutdown) {
    let backend = Arc::new(backend);
    let what = format!("{} bridge", backend.kind());
    crate::agent::connect_loop(&socket, &what, &mut stop, |stream| {
        session(stream, backend.clone(), settings.clone())
    })
    .await;
}

struct Worker {
    tx: mpsc::UnboundedSender<Text>,
    task: tokio::task::JoinHandle<()>,
}

async fn session(stream: UnixStream, backend: Arc<Backend>, settings: Settings) {
    let (read, mut write) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(lines) = out_rx.recv().await {
            if write.write_all(lines.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let _ = out_tx.send(format!(
        "{}\n",
        crate::agent::protocol::hello_line(backend.kind())
    ));
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!("unreadable line from the gateway");
            continue;
        };
        match v.get("type").and_then(Value::as_str) {
            Some("message") => {
                let Some(msg) = InboundMessage::from_value(&v) else {
                    tracing::warn!("a message line without an id from the gateway; ignored");
                    continue;
                };
                let key = msg.conversation_key();
                let text = Text {
                    msg,
                    arrived: Instant::now(),
                };
                let text = match workers.get(&key) {
                    Some(w) => match w.tx.send(text) {
                        Ok(()) => continue,
                        Err(mpsc::error::SendError(t)) => t,
                    },
                    None => text,
                };
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(text);
                let task = tokio::spawn(worker(
                    key.clone(),
                    rx,
                    backend.clone(),
                    settings.clone(),
                    out_tx.clone(),
                ));
                workers.insert(key, Worker { tx, task });
            }
            Some("sent") => tracing::debug!("sent: {}", v),
            Some("error") => {
                let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("?");
                tracing::warn!("gateway error: {message}");
            }
            _ => {}
        }
    }
    // The gateway redelivers what was not acknowledged to the next connection; turns in
    // progress are dropped (an ACP prompt is cancelled) rather than answered twice.
    for (_, w) in workers {
        w.task.abort();
    }
    writer.abort();
}

async fn worker(
    conversation: String,
    mut rx: mpsc::UnboundedReceiver<Text>,
    backend: Arc<Backend>,
    settings: Settings,
    out: mpsc::UnboundedSender<String>,
) {
    let mut held: Option<Text> = None;
    loop {
        let first = match held.take() {
            Some(t) => t,
            None => match rx.recv().await {
                Some(t) => t,
                None => return,
            },
        };
        let mut batch = vec![first];
        if settings.coalesce_ms > 0 {
            loop {
                let last = batch.last().map_or_else(Instant::now, |t| t.arrived);
                // A reply never waits more than the window after the latest text.
                let deadline = last + Duration::from_millis(settings.coalesce_ms);
                match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                    Ok(Some(t)) => {
                        let gap = t.arrived.saturating_duration_since(last).as_millis() as u64;
                        if guard::joins(0, gap, settings.coalesce_ms) {
                            batch.push(t);
                        } else {
                            held = Some(t);
                            break;
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let turn = Turn {
            conversation: conversation.clone(),
            texts: batch.into_iter().map(|t| t.msg).collect(),
        };
        let started = Instant::now();
        let answer = backend.answer(&turn).await;
        let lines = turn_lines(&turn, answer, settings.max_chars);
        let chars_in = turn.prompt().chars().count();
        let from = turn
            .texts
            .first()
            .map(|t| crate::phone::redact_numbers_in(&t.from))
            .unwrap_or_default();
        tracing::info!(
            conversation = %turn.log_name(),
            from = %from,
            texts = turn.texts.len(),
            ms = started.elapsed().as_millis() as u64,
            chars_in,
            chars_out = lines.reply_chars,
            "turn done{}",
            if lines.cut { " (reply cut by --max-chars)" } else { "" }
        );
        if lines.cut {
            tracing::warn!(conversation = %turn.log_name(), "the reply was {} characters; cut to --max-chars {}", lines.original_chars, settings.max_chars);
        }
        tracing::debug!(conversation = %turn.log_name(), prompt = %turn.prompt(), reply = %lines.text, "turn text");
        if out.send(lines.lines).is_err() {
            return;
        }
    }
}

/// What a finished turn writes to the socket.
#[derive(Debug, PartialEq, Eq)]
struct TurnLines {
    /// The reply (for the last text) first, then the acks of the others: a crash in
    /// between leaves the earlier texts to be redelivered, never the reply unsent.
    lines: String,
    text: String,
    reply_chars: usize,
    original_chars: usize,
    cut: bool,
}

fn turn_lines(turn: &Turn, answer: Option<String>, max_chars: usize) -> TurnLines {
    let ids = turn.ids();
    let mut lines = String::new();
    let (mut text, mut cut, mut original_chars) = (String::new(), false, 0);
    if let Some((last, earlier)) = ids.split_last() {
        match answer
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
        {
            Some(a) => {
                original_chars = a.chars().count();
                (text, cut) = guard::cap(&a, max_chars);
                lines.push_str(&json!({"type": "reply", "id": last, "text": text}).to_string());
            }
            None => lines.push_str(&json!({"type": "ack", "id": last}).to_string()),
        }
        lines.push('\n');
        for id in earlier {
            lines.push_str(&json!({"type": "ack", "id": id}).to_string());
            lines.push('\n');
        }
    }
    TurnLines {
        lines,
        reply_chars: text.chars().count(),
        text,
        original_chars,
        cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, text: &str) -> InboundMessage {
        InboundMessage {
            id: id.into(),
            account: "default".into(),
            from: "+15557654321".into(),
            to: "+15551234567".into(),
            text: text.into(),
            media: vec![],
            conversation: None,
        }
    }

    #[test]
    fn turn_lines_table() {
        let turn = Turn {
            conversation: "default:+15557654321".into(),
            texts: vec![
                msg("a", "hey"),
                msg("b", "can you"),
                msg("c", "check my 3pm"),
            ],
        };
        assert_eq!(turn.prompt(), "hey\ncan you\ncheck my 3pm");
        assert_eq!(turn.log_name(), "default:***4321");
        let l = turn_lines(&turn, Some(" sure \n".into()), 4000);
        assert_eq!(
            l.lines,
            "{\"type\":\"reply\",\"id\":\"c\",\"text\":\"sure\"}\n{\"type\":\"ack\",\"id\":\"a\"}\n{\"type\":\"ack\",\"id\":\"b\"}\n"
        );
        assert!(!l.cut);
        let l = turn_lines(&turn, Some("   ".into()), 4000);
        assert!(l.lines.starts_with("{\"type\":\"ack\",\"id\":\"c\"}\n"));
        assert_eq!(l.lines.lines().count(), 3);
        let l = turn_lines(&turn, None, 4000);
        assert_eq!(l.lines.lines().count(), 3);
        assert_eq!(turn.prompt_noting_media(), turn.prompt());
        let mut pic = turn.clone();
        pic.texts[2].text = String::new();
        pic.texts[2].media = vec![crate::agent::protocol::InboundMedia {
            url: "u".into(),
            content_type: "image/jpeg".into(),
            path: None,
        }];
        assert_eq!(
            pic.prompt_noting_media(),
            "hey\ncan you\n[attached: image/jpeg]"
        );
        let l = turn_lines(&turn, Some("x".repeat(50)), 10);
        assert!(l.cut);
        assert_eq!(l.reply_chars, 10);
        assert_eq!(l.original_chars, 50);
    }
}
