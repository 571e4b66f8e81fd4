//! `agent openai`: each turn is `POST {base}/chat/completions` with the system prompt,
//! the conversation's last `--history` turns and the new text; `user` is the
//! conversation id. The transcript lives in the state directory, one file per
//! conversation. A call that fails (429, 5xx, a hang, a body that is not a completion)
//! is retried with backoff for as long as it takes: the message stays unacknowledged,
//! it is never answered with an error text. An answer without text (only
//! `tool_calls`, a refusal, empty content) or a request the server calls bad (400,
//! 413, 422) will not get better by asking again at once: the texts get `fail`, and
//! the daemon asks again later with its own backoff, then moves them to the dead
//! letters ([`disposition`]). Transcripts idle for 30 days are deleted.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{guard, state, Answer, Turn};
use crate::secret::Secret;

/// A completion body larger than this is refused without being read whole.
pub(crate) const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct OpenAiOptions {
    /// `--base-url`, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<Secret>,
    pub system: Option<String>,
    /// Turns (a text and its reply) kept and sent.
    pub history: usize,
    pub state_dir: PathBuf,
    pub timeout: Duration,
    /// The cost guard, applied to what the transcript keeps too.
    pub max_chars: usize,
}

/// One turn of a conversation as the transcript keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Exchange {
    /// The message ids this turn answered: a redelivered message that was already
    /// answered gets the same reply again, without a second call.
    pub ids: Vec<String>,
    pub user: String,
    pub assistant: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Transcript {
    pub conversation: String,
    pub turns: Vec<Exchange>,
}

/// Why a call did not give a reply (each is retried).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("cannot reach the server: {0}")]
    Transport(String),
    #[error("HTTP {status}: {snippet}")]
    Status {
        status: u16,
        snippet: String,
        retry_after: Option<Duration>,
    },
    #[error("the response is larger than {} MiB; refused", MAX_BODY / 1024 / 1024)]
    TooLarge,
    #[error("the response is not JSON: {0}")]
    NotJson(String),
    #[error("the response has no choices[0].message.content")]
    NoChoices,
    /// A 3xx: the conversation is not sent on to whatever host `Location` names.
    #[error("HTTP {status}: a redirect to {target}, not followed (the bridge follows no redirects with a conversation or a key; check --base-url)")]
    Redirect { status: u16, target: String },
    /// A completion whose message carries no text.
    #[error("the model's answer has no text ({0})")]
    NoText(&'static str),
}

/// What to do with a call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Try again here after a backoff: the server may be back soon (the text stays
    /// unacknowledged meanwhile).
    RetryHere,
    /// Give the texts `fail`: asking again at once would get the same answer.
    Fail,
}

pub(crate) fn disposition(e: &CallError) -> Disposition {
    match e {
        CallError::NoText(_) => Disposition::Fail,
        // The request itself is refused (malformed, too large, unprocessable): a
        // 401/403/404 is the operator's configuration and waits for the fix.
        CallError::Status {
            status: 400 | 413 | 422,
            ..
        } => Disposition::Fail,
        _ => Disposition::RetryHere,
    }
}

impl CallError {
    fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Keeps the newest `history` turns.
pub(crate) fn trim(turns: &mut Vec<Exchange>, history: usize) {
    if turns.len() > history {
        turns.drain(..turns.len() - history);
    }
}

/// The `messages` of a request: the system prompt, the last `history` turns, the text.
pub(crate) fn messages(
    system: Option<&str>,
    turns: &[Exchange],
    history: usize,
    text: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(s) = system.filter(|s| !s.trim().is_empty()) {
        out.push(json!({"role": "system", "content": s}));
    }
    let skip = turns.len().saturating_sub(history);
    for t in &turns[skip..] {
        out.push(json!({"role": "user", "content": t.user}));
        out.push(json!({"role": "assistant", "content": t.assistant}));
    }
    out.push(json!({"role": "user", "content": text}));
    out
}

/// What a turn's texts already got, judged from the transcript (they may be
/// redelivered after a crash or a lost connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Earlier<'a> {
    /// Not answered yet: ask the model.
    No,
    /// The turn ending with this batch's last text was answered, but its reply may
    /// not have reached the gateway: send the same reply again.
    Resend(&'a str),
    /// These texts were the earlier part of an answered turn: its reply went out
    /// before their acks were written, so only acknowledge them.
    AckOnly,
}

/// Looks `ids` (a batch, oldest first) up in the transcript.
pub(crate) fn earlier<'a>(transcript: &'a Transcript, ids: &[String]) -> Earlier<'a> {
    let Some(last) = ids.last() else {
        return Earlier::No;
    };
    for t in transcript.turns.iter().rev() {
        if t.ids.last() == Some(last) {
            return Earlier::Resend(&t.assistant);
        }
        if ids.iter().all(|id| t.ids.contains(id)) {
            return Earlier::AckOnly;
        }
    }
    Earlier::No
}

/// How long to wait before attempt `attempt + 1`: 1 s doubling to 60 s, or what the
/// server asked for with Retry-After (at most 10 min).
pub(crate) fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    const SCHEDULE: crate::backoff::Backoff = crate::backoff::Backoff {
        first: Duration::from_secs(1),
        factor: 2,
        cap: Duration::from_secs(60),
        jitter: crate::backoff::Jitter::None,
        retry_after: crate::backoff::RetryAfter::Instead {
            cap: Duration::from_secs(600),
        },
    };
    // `attempt` counts from 0: the first failure is attempt 0.
    SCHEDULE.wait(attempt.saturating_add(1), retry_after, 0.0)
}

/// `choices[0].message.content` of a completion body, which must hold text.
pub(crate) fn parse_reply(body: &[u8]) -> Result<String, CallError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        let head: String = String::from_utf8_lossy(&body[..body.len().min(80)]).into();
        CallError::NotJson(format!("{e} (starts with {head:?})"))
    })?;
    let message = v
        .pointer("/choices/0/message")
        .filter(|m| m.is_object())
        .ok_or(CallError::NoChoices)?;
    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        // Content parts: keep the text ones.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(CallError::NoChoices),
    };
    if !text.trim().is_empty() {
        return Ok(text);
    }
    let has = |k: &str| {
        message
            .get(k)
            .is_some_and(|v| !v.is_null() && v != &json!([]) && v != &json!(""))
    };
    Err(CallError::NoText(
        if has("tool_calls") || has("function_call") {
            "only tool_calls, which this bridge does not run"
        } else if has("refusal") {
            "a refusal"
        } else {
            "empty content"
        },
    ))
}

fn retry_after_header(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

pub(crate) struct OpenAiBridge {
    opts: OpenAiOptions,
    http: reqwest::Client,
    url: String,
    clock: state::Clock,
    /// When idle transcripts were last looked for.
    pruned: std::sync::Mutex<u64>,
}

impl OpenAiBridge {
    pub(crate) fn new(opts: OpenAiOptions) -> Result<Self, String> {
        state::ensure_dir(&opts.state_dir).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            // Each call carries the conversation (and the key): never sent on to the
            // host a 3xx names (issue 20 item 2); a 3xx is a failed call.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let url = format!("{}/chat/completions", opts.base_url.trim_end_matches('/'));
        let bridge = Self {
            opts,
            http,
            url,
            clock: state::system_clock,
            pruned: std::sync::Mutex::new(0),
        };
        bridge.prune_if_due();
        Ok(bridge)
    }

    /// Deletes the transcripts idle for over 30 days, at most once per
    /// [`state::PRUNE_EVERY`].
    fn prune_if_due(&self) {
        let now = (self.clock)();
        {
            let mut last = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
            if *last != 0 && now.saturating_sub(*last) < state::PRUNE_EVERY {
                return;
            }
            *last = now.max(1);
        }
        match state::prune_files(&self.opts.state_dir, now, state::MAX_IDLE) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                "deleted {n} transcript(s) idle for over {} days",
                state::MAX_IDLE / 86400
            ),
            Err(e) => tracing::warn!("cannot prune idle transcripts: {e}"),
        }
    }

    fn path(&self, conversation: &str) -> PathBuf {
        self.opts
            .state_dir
            .join(state::file_name(conversation, "json"))
    }

    pub(crate) async fn answer(&self, turn: &Turn) -> Answer {
        self.prune_if_due();
        let path = self.path(&turn.conversation);
        let mut transcript = match state::read_json::<Transcript>(&path) {
            Ok(Some(t)) => t,
            Ok(None) => Transcript {
                conversation: turn.conversation.clone(),
                turns: Vec::new(),
            },
            Err(e) => {
                tracing::error!(conversation = %turn.log_name(), "{e}; this conversation starts with an empty transcript");
                Transcript {
                    conversation: turn.conversation.clone(),
                    turns: Vec::new(),
                }
            }
        };
        let ids = turn.ids();
        match earlier(&transcript, &ids) {
            Earlier::No => {}
            Earlier::Resend(reply) => {
                tracing::info!(conversation = %turn.log_name(), "a redelivered message was answered before; sending the same reply again");
                return Answer::Reply(reply.to_string());
            }
            Earlier::AckOnly => {
                tracing::info!(conversation = %turn.log_name(), "redelivered messages were part of a turn already answered; acknowledged");
                return Answer::AckOnly;
            }
        }
        let prompt = turn.prompt_noting_media();
        let messages = messages(
            self.opts.system.as_deref(),
            &transcript.turns,
            self.opts.history,
            &prompt,
        );
        let body = json!({
            "model": self.opts.model,
            "messages": messages,
            "user": turn.conversation,
        });
        let mut attempt = 0u32;
        let reply = loop {
            match self.call(&body).await {
                Ok(r) => break r,
                Err(e) if disposition(&e) == Disposition::Fail => {
                    return Answer::retry(format!("model call to {}: {e}", self.url));
                }
                Err(e) => {
                    let wait = backoff(attempt, e.retry_after());
                    tracing::warn!(
                        conversation = %turn.log_name(),
                        "model call to {} failed (attempt {}): {e}; retrying in {} s, the message stays unacknowledged",
                        self.url,
                        attempt + 1,
                        wait.as_secs()
                    );
                    tokio::time::sleep(wait).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        };
        let (kept, _) = guard::cap(reply.trim(), self.opts.max_chars);
        transcript.turns.push(Exchange {
            ids,
            user: prompt,
            assistant: kept,
        });
        trim(&mut transcript.turns, self.opts.history.max(1));
        if let Err(e) = state::write_json(&path, &transcript) {
            tracing::error!(conversation = %turn.log_name(), "{e}; the reply is sent but this turn is not remembered");
        }
        Answer::Reply(reply)
    }

    async fn call(&self, body: &Value) -> Result<String, CallError> {
        let secs = self.opts.timeout.as_secs();
        let mut req = self.http.post(&self.url).json(body);
        if let Some(key) = &self.opts.api_key {
            req = req.bearer_auth(key.expose());
        }
        // One deadline for the whole exchange: headers and body.
        let exchange = async {
            let resp = req.send().await.map_err(|e| {
                if e.is_timeout() {
                    CallError::Timeout(secs)
                } else {
                    CallError::Transport(without_url(&e))
                }
            })?;
            let status = resp.status();
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok());
                return Err(CallError::Redirect {
                    status: status.as_u16(),
                    target: crate::twilio::client::redirect_target(location, resp.url()),
                });
            }
            let retry_after = retry_after_header(resp.headers());
            if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
                return Err(CallError::TooLarge);
            }
            let body = read_capped(resp).await?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                // A server may echo the key back in its complaint.
                let keys: Vec<&Secret> = self.opts.api_key.iter().collect();
                return Err(CallError::Status {
                    status: status.as_u16(),
                    snippet: crate::secret::scrub(text.trim(), &keys),
                    retry_after,
                });
            }
            parse_reply(&body)
        };
        tokio::time::timeout(self.opts.timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout(secs)))
    }
}

/// Reads a body up to [`MAX_BODY`], chunk by chunk: a 100 MB answer is refused after
/// the first 4 MiB, never buffered whole.
async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, CallError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| CallError::Transport(without_url(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(CallError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error and its causes, without the request URL: `--base-url` may carry
/// credentials (userinfo, a `?key=` query), and reqwest's `Display` prints the whole
/// URL ("error sending request for url (…)"), which would put them in logs and status.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    match e.url() {
        Some(url) => s
            .replace(&format!(" for url ({url})"), "")
            .replace(url.as_str(), "<url>"),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: u32) -> Exchange {
        Exchange {
            ids: vec![format!("SM{n}")],
            user: format!("q{n}"),
            assistant: format!("a{n}"),
        }
    }

    #[test]
    fn trim_and_messages() {
        let mut turns: Vec<Exchange> = (1..=5).map(ex).collect();
        trim(&mut turns, 3);
        assert_eq!(turns, vec![ex(3), ex(4), ex(5)]);
        trim(&mut turns, 10);
        assert_eq!(turns.len(), 3);
        let m = messages(Some("be brief"), &turns, 2, "new");
        let roles: Vec<&str> = m.iter().map(|v| v["role"].as_str().unwrap()).collect();
        assert_eq!(
            roles,
            ["system", "user", "assistant", "user", "assistant", "user"]
        );
        assert_eq!(m[1]["content"], "q4");
        assert_eq!(m[5]["content"], "new");
        let m = messages(None, &turns, 0, "only");
        assert_eq!(m, vec![json!({"role": "user", "content": "only"})]);
        assert_eq!(messages(Some("  "), &[], 5, "x").len(), 1);
    }

    #[test]
    fn redelivered_answered_once() {
        let t = Transcript {
            conversation: "c".into(),
            turns: vec![
                Exchange {
                    ids: vec!["SM1".into(), "SM2".into()],
                    user: "a\nb".into(),
                    assistant: "r1".into(),
                },
                ex(3),
            ],
        };
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases = [
            (ids(&["SM1", "SM2"]), Earlier::Resend("r1")),
            (ids(&["SM2"]), Earlier::Resend("r1")),
            (ids(&["SM3"]), Earlier::Resend("a3")),
            // the reply to SM1+SM2 went out before SM1's ack: SM1 alone is only acked
            (ids(&["SM1"]), Earlier::AckOnly),
            (ids(&["SM9"]), Earlier::No),
            (ids(&["SM1", "SM9"]), Earlier::No),
            (ids(&[]), Earlier::No),
        ];
        for (batch, want) in cases {
            assert_eq!(earlier(&t, &batch), want, "{batch:?}");
        }
    }

    #[test]
    fn backoff_table() {
        let s = Duration::from_secs;
        let cases = [
            (0, None, s(1)),
            (1, None, s(2)),
            (5, None, s(32)),
            (6, None, s(60)),
            (60, None, s(60)),
            (0, Some(s(7)), s(7)),
            (3, Some(s(0)), s(0)),
            (0, Some(s(100_000)), s(600)),
        ];
        for (attempt, ra, want) in cases {
            assert_eq!(backoff(attempt, ra), want, "{attempt} {ra:?}");
        }
    }

    #[test]
    fn parse_reply_table() {
        let ok = [
            (
                r#"{"choices":[{"message":{"role":"assistant","content":"hi"}}]}"#,
                "hi",
            ),
            (
                r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#,
                "ab",
            ),
            // text next to tool calls is an answer
            (
                r#"{"choices":[{"message":{"content":"on it","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#,
                "on it",
            ),
        ];
        for (body, want) in ok {
            assert_eq!(parse_reply(body.as_bytes()).unwrap(), want, "{body}");
        }
        let bad = [
            ("<html>502 Bad Gateway</html>", "not JSON"),
            ("", "not JSON"),
            (r#"{"choices":[]}"#, "no choices"),
            (r#"{"choices":[{"message":"x"}]}"#, "no choices"),
            (r#"{"choices":[{"message":{"content":5}}]}"#, "no choices"),
            (r#"{"error":{"message":"x"}}"#, "no choices"),
            (
                r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
                "no text (only tool_calls",
            ),
            (
                r#"{"choices":[{"message":{"function_call":{"name":"f","arguments":"{}"}}}]}"#,
                "no text (only tool_calls",
            ),
            (
                r#"{"choices":[{"message":{"content":null,"refusal":"I can't help with that"}}]}"#,
                "no text (a refusal)",
            ),
            (
                r#"{"choices":[{"message":{"content":null}}]}"#,
                "no text (empty content)",
            ),
            (r#"{"choices":[{"message":{}}]}"#, "no text (empty content)"),
            (
                r#"{"choices":[{"message":{"content":""}}]}"#,
                "no text (empty content)",
            ),
            (
                r#"{"choices":[{"message":{"content":" \n ","tool_calls":[]}}]}"#,
                "no text (empty content)",
            ),
            (
                r#"{"choices":[{"message":{"content":[{"type":"image_url"}]}}]}"#,
                "no text (empty content)",
            ),
        ];
        for (body, needle) in bad {
            let e = parse_reply(body.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn disposition_table() {
        let status = |status| CallError::Status {
            status,
            snippet: String::new(),
            retry_after: None,
        };
        let cases = [
            (CallError::NoText("empty content"), Disposition::Fail),
            (status(400), Disposition::Fail),
            (status(413), Disposition::Fail),
            (status(422), Disposition::Fail),
            (status(429), Disposition::RetryHere),
            (status(500), Disposition::RetryHere),
            (status(503), Disposition::RetryHere),
            // the operator's configuration: waits for the fix
            (status(401), Disposition::RetryHere),
            (status(404), Disposition::RetryHere),
            (status(302), Disposition::RetryHere),
            (CallError::Timeout(5), Disposition::RetryHere),
            (
                CallError::Transport("refused".into()),
                Disposition::RetryHere,
            ),
            (CallError::TooLarge, Disposition::RetryHere),
            (CallError::NotJson("x".into()), Disposition::RetryHere),
            (CallError::NoChoices, Disposition::RetryHere),
        ];
        for (e, want) in cases {
            assert_eq!(disposition(&e), want, "{e}");
        }
    }

    /// The URL (and whatever secret it carries) is stripped from a transport error;
    /// before the fix the message was `error sending request for url (http://…)`.
    #[tokio::test]
    async fn without_url_strips_the_url() {
        // Port 1 on loopback: nothing listens, the connect fails at once.
        let url = "http://user:pa55word@127.0.0.1:1/v1/chat?key=sk-secret-123";
        let err = reqwest::Client::new().get(url).send().await.unwrap_err();
        assert!(err.url().is_some(), "the error carries the URL: {err}");
        let text = without_url(&err);
        for secret in ["pa55word", "sk-secret-123", "127.0.0.1:1", "for url"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(!text.is_empty());
    }
}
