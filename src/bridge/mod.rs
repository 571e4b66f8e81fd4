//! The built-in bridges (CONTRACT §7): `agent acp` (an Agent Client Protocol agent on
//! stdin/stdout) and `agent openai` (an OpenAI-compatible chat-completions server).
//! Both are ordinary agents on the socket: this module connects, keeps one worker per
//! conversation (turns of one conversation run one at a time, conversations run side
//! by side), coalesces bursts, applies the cost guard, and writes each turn's reply
//! before the acks of the texts it answered. The backends only turn a [`Turn`] into an
//! [`Answer`]; a turn that is not answered (no text, a failure for good) gets `fail`
//! lines (CONTRACT §11), never an ack: nothing is acknowledged that was not handled.

pub(crate) mod acp;
pub(crate) mod ask;
pub(crate) mod guard;
pub(crate) mod openai;
pub(crate) mod state;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::agent::protocol::InboundMessage;
use crate::shutdown::Shutdown;

/// What both bridges take besides their own options.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `--coalesce MS`: 0 = every text is its own turn.
    pub coalesce_ms: u64,
    /// `--max-chars N`: the cost guard.
    pub max_chars: usize,
}

/// One or more texts of one conversation that become one prompt.
#[derive(Debug, Clone)]
pub(crate) struct Turn {
    pub conversation: String,
    pub texts: Vec<InboundMessage>,
}

impl Turn {
    /// The prompt: the texts joined by newlines.
    pub(crate) fn prompt(&self) -> String {
        guard::join_texts(self.texts.iter().map(|m| m.text.as_str()))
    }

    /// The prompt for a model that cannot see attachments: the texts, and a note of
    /// what was attached (a bare picture is not an empty prompt).
    pub(crate) fn prompt_noting_media(&self) -> String {
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
    pub(crate) fn ids(&self) -> Vec<String> {
        self.texts.iter().map(|m| m.id.clone()).collect()
    }

    /// The conversation as it may appear in a log line (a fallback key holds a number).
    pub(crate) fn log_name(&self) -> String {
        crate::phone::redact_numbers_in(&self.conversation)
    }
}

/// What a backend made of a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The reply text. An empty (or blank) one is no answer: the turn fails.
    Reply(String),
    /// A reply with media (the reply line's `media` items, CONTRACT §10); the text may
    /// be empty.
    Media(String, Vec<Value>),
    /// The texts were answered before (a redelivery): acknowledge them only.
    AckOnly,
    /// The turn was not handled: each of its texts gets `fail` with this error (no
    /// message text in it) and `retry`, so the daemon asks again later with backoff
    /// and finally moves it to the dead letters.
    Fail { error: String, retry: bool },
}

impl Answer {
    /// A failure the daemon should retry.
    pub(crate) fn retry(error: impl Into<String>) -> Self {
        Answer::Fail {
            error: error.into(),
            retry: true,
        }
    }
}

/// The model behind a bridge.
pub(crate) enum Backend {
    Acp(Arc<acp::AcpBridge>),
    OpenAi(Arc<openai::OpenAiBridge>),
}

impl Backend {
    /// What became of a turn. Backends retry what may pass (a restarted agent, a 503)
    /// themselves and answer [`Answer::Fail`] for what will not.
    async fn answer(&self, turn: &Turn) -> Answer {
        match self {
            Backend::Acp(b) => b.answer(turn).await,
            Backend::OpenAi(b) => b.answer(turn).await,
        }
    }

    /// Who asks the approvers for this backend (`agent acp --permissions ask`).
    fn asker(&self) -> Option<Arc<ask::Asker>> {
        match self {
            Backend::Acp(b) => b.asker(),
            Backend::OpenAi(_) => None,
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
pub(crate) async fn run(socket: PathBuf, backend: Backend, settings: Settings, mut stop: Shutdown) {
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
    let asker = backend.asker();
    if let Some(a) = &asker {
        a.connected(out_tx.clone());
    }
    let mut workers: HashMap<String, Worker> = HashMap::new();
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
            Some("answer") => {
                if let Some(a) = &asker {
                    a.answered(&v);
                }
            }
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
    if let Some(a) = &asker {
        a.disconnected();
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
        let ms = started.elapsed().as_millis() as u64;
        match &lines.failed {
            // One line per turn, at WARN: the texts were not answered.
            Some(error) => tracing::warn!(
                conversation = %turn.log_name(),
                from = %from,
                texts = turn.texts.len(),
                ms,
                chars_in,
                "turn failed: {error}; its texts get `fail` (asked again later with backoff, then the dead letters)"
            ),
            None => tracing::info!(
                conversation = %turn.log_name(),
                from = %from,
                texts = turn.texts.len(),
                ms,
                chars_in,
                chars_out = lines.reply_chars,
                "turn done{}",
                if lines.cut { " (reply cut by --max-chars)" } else { "" }
            ),
        }
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
    /// between leaves the earlier texts to be redelivered, never the reply unsent. Or
    /// a `fail` for every text of a turn that was not answered.
    lines: String,
    text: String,
    reply_chars: usize,
    original_chars: usize,
    cut: bool,
    /// Why the turn's texts got `fail`.
    failed: Option<String>,
}

/// The longest `error` a `fail` line carries (an agent's error message can be long).
const MAX_ERROR_CHARS: usize = 300;

/// A reply with no text is not an answer (CONTRACT §7, §11).
const NO_TEXT: &str = "the agent's answer had no text";

fn turn_lines(turn: &Turn, answer: Answer, max_chars: usize) -> TurnLines {
    let ids = turn.ids();
    let mut out = TurnLines {
        lines: String::new(),
        text: String::new(),
        reply_chars: 0,
        original_chars: 0,
        cut: false,
        failed: None,
    };
    let Some((last, earlier)) = ids.split_last() else {
        return out;
    };
    let answer = match answer {
        Answer::Reply(a) if a.trim().is_empty() => Answer::retry(NO_TEXT),
        Answer::Media(a, media) if media.is_empty() => Answer::Reply(a),
        other => other,
    };
    let answer = match answer {
        Answer::Reply(a) if a.trim().is_empty() => Answer::retry(NO_TEXT),
        other => other,
    };
    let mut lines: Vec<String> = Vec::new();
    let ack = |id: &String| json!({"type": "ack", "id": id}).to_string();
    match answer {
        Answer::Reply(a) => {
            let a = a.trim();
            out.original_chars = a.chars().count();
            (out.text, out.cut) = guard::cap(a, max_chars);
            lines.push(json!({"type": "reply", "id": last, "text": out.text}).to_string());
            lines.extend(earlier.iter().map(ack));
        }
        Answer::Media(a, media) => {
            let a = a.trim();
            out.original_chars = a.chars().count();
            (out.text, out.cut) = guard::cap(a, max_chars);
            lines.push(
                json!({"type": "reply", "id": last, "text": out.text, "media": media}).to_string(),
            );
            lines.extend(earlier.iter().map(ack));
        }
        Answer::AckOnly => {
            lines.extend(std::iter::once(last).chain(earlier).map(ack));
        }
        Answer::Fail { error, retry } => {
            let (error, _) = guard::cap(error.trim(), MAX_ERROR_CHARS);
            lines.extend(
                std::iter::once(last)
                    .chain(earlier)
                    .map(|id| crate::agent::protocol::fail_line(id, &error, retry)),
            );
            out.failed = Some(error);
        }
    }
    for l in lines {
        out.lines.push_str(&l);
        out.lines.push('\n');
    }
    out.reply_chars = out.text.chars().count();
    out
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
            channel: None,
            profile_name: None,
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
        let l = turn_lines(&turn, Answer::Reply(" sure \n".into()), 4000);
        assert_eq!(
            l.lines,
            "{\"type\":\"reply\",\"id\":\"c\",\"text\":\"sure\"}\n{\"type\":\"ack\",\"id\":\"a\"}\n{\"type\":\"ack\",\"id\":\"b\"}\n"
        );
        assert!(!l.cut);
        assert_eq!(l.failed, None);
        let fail_all = |error: &str, retry: bool| {
            ["c", "a", "b"]
                .iter()
                .map(|id| {
                    format!(
                        "{}\n",
                        json!({"type": "fail", "id": id, "error": error, "retry": retry})
                    )
                })
                .collect::<String>()
        };
        // No text is no answer: every text of the turn gets `fail`, none an ack.
        for blank in ["", "   ", "\n\t "] {
            let l = turn_lines(&turn, Answer::Reply(blank.into()), 4000);
            assert_eq!(l.lines, fail_all(NO_TEXT, true), "{blank:?}");
            assert_eq!(l.failed.as_deref(), Some(NO_TEXT));
        }
        let l = turn_lines(&turn, Answer::retry("  the agent refused (refusal) "), 4000);
        assert_eq!(l.lines, fail_all("the agent refused (refusal)", true));
        let l = turn_lines(
            &turn,
            Answer::Fail {
                error: "bad".into(),
                retry: false,
            },
            4000,
        );
        assert_eq!(l.lines, fail_all("bad", false));
        // A long error is cut.
        let l = turn_lines(&turn, Answer::retry("e".repeat(10_000)), 4000);
        assert_eq!(l.failed.unwrap().chars().count(), MAX_ERROR_CHARS);
        // Already answered: acks only.
        let l = turn_lines(&turn, Answer::AckOnly, 4000);
        assert_eq!(
            l.lines,
            "{\"type\":\"ack\",\"id\":\"c\"}\n{\"type\":\"ack\",\"id\":\"a\"}\n{\"type\":\"ack\",\"id\":\"b\"}\n"
        );
        let empty = Turn {
            conversation: "x".into(),
            texts: vec![],
        };
        assert_eq!(turn_lines(&empty, Answer::AckOnly, 10).lines, "");
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
        let l = turn_lines(&turn, Answer::Reply("x".repeat(50)), 10);
        assert!(l.cut);
        assert_eq!(l.reply_chars, 10);
        assert_eq!(l.original_chars, 50);
    }
}
