//! `agent acp -- CMD`: one long-lived Agent Client Protocol agent on stdin/stdout
//! (JSON-RPC 2.0, one message per line, protocol version 1), one ACP session per
//! conversation.
//!
//! The JSON-RPC is written here rather than taken from the `agent-client-protocol`
//! crate: that crate's connection runs `!Send` futures (it needs a `LocalSet` on a
//! thread of its own next to our multi-threaded runtime) and brings a schema crate
//! and its dependencies, while the client side of ACP that a text bridge needs is six
//! methods whose shapes the tests check against the official TypeScript SDK (which
//! validates every request it receives against the protocol's schema).
//!
//! A supervisor task runs the agent process and restarts it with backoff when it
//! exits; a turn that loses its agent waits for the next one and is asked again, so a
//! text is never lost to a crash. Replies are assembled from `agent_message_chunk`
//! updates, at most `--max-chars` + 1 characters of them (a flood costs no memory).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::{state, Answer, Turn};

/// A line from the agent longer than this is skipped (and logged), not buffered.
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// A picture larger than this is passed as its path, not inlined.
const MAX_IMAGE: u64 = 10 * 1024 * 1024;
const INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an agent has to stop after `session/cancel` before it is restarted.
const CANCEL_GRACE: Duration = Duration::from_secs(10);
/// What may wait for the agent's stdin, in bytes (requests, prompts with inlined
/// pictures, answers to its requests): an agent that stops reading costs at most
/// this (and one larger line, queued alone), not all it is sent.
pub const STDIN_BUDGET: usize = 8 * 1024 * 1024;
/// How long a line may wait for room in [`STDIN_BUDGET`] (at most `--timeout`)
/// before the agent is judged not to read its stdin and restarted.
const STDIN_STALL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct AcpOptions {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub state_dir: PathBuf,
    /// `--permissions allow`: answer permission requests with an allow-once option.
    pub allow_permissions: bool,
    pub timeout: Duration,
    pub max_chars: usize,
}

// ---- pure decisions ---------------------------------------------------------------

/// One line from the agent, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Response {
        id: u64,
        result: Result<Value, String>,
    },
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    /// Not JSON-RPC; the reason.
    Garbage(String),
}

pub fn classify(line: &str) -> Incoming {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Incoming::Garbage(format!("not JSON ({e})")),
    };
    let Value::Object(mut o) = v else {
        return Incoming::Garbage("not a JSON-RPC object".into());
    };
    let method = o.get("method").and_then(Value::as_str).map(String::from);
    let params = o.remove("params").unwrap_or(Value::Null);
    match (method, o.remove("id")) {
        (Some(method), Some(id)) if !id.is_null() => Incoming::Request { id, method, params },
        (Some(method), _) => Incoming::Notification { method, params },
        (None, Some(id)) => {
            let Some(id) = id.as_u64() else {
                return Incoming::Garbage(format!("a response to an id we never used: {id}"));
            };
            if let Some(err) = o.get("error") {
                let msg = err.get("message").and_then(Value::as_str).unwrap_or("?");
                let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
                Incoming::Response {
                    id,
                    result: Err(format!("{msg} (code {code})")),
                }
            } else if let Some(r) = o.remove("result") {
                Incoming::Response { id, result: Ok(r) }
            } else {
                Incoming::Garbage("a response with neither result nor error".into())
            }
        }
        (None, None) => Incoming::Garbage("no method and no id".into()),
    }
}

/// The `optionId` to answer a permission request with, or `None` for the `cancelled`
/// outcome (no suitable option offered). Deny: a reject option. Allow: allow-once,
/// else a reject option (never "always": one text cannot grant a standing right).
pub fn choose_option(options: &[Value], allow: bool) -> Option<String> {
    let kinds: &[&str] = if allow {
        &["allow_once", "reject_once", "reject_always"]
    } else {
        &["reject_once", "reject_always"]
    };
    kinds.iter().find_map(|k| {
        options
            .iter()
            .find(|o| o.get("kind").and_then(Value::as_str) == Some(k))
            .and_then(|o| o.get("optionId").and_then(Value::as_str))
            .map(String::from)
    })
}

/// The text a session update adds to the reply, if it is an agent message chunk.
pub fn chunk_text(update: &Value) -> Option<&str> {
    if update.get("sessionUpdate").and_then(Value::as_str) != Some("agent_message_chunk") {
        return None;
    }
    let content = update.get("content")?;
    if content.get("type").and_then(Value::as_str) != Some("text") {
        return None;
    }
    content.get("text").and_then(Value::as_str)
}

/// The prompt's content blocks: one `text` block, then an `image` block per picture
/// when the agent takes images (`images` holds (mimeType, base64) of the ones that
/// could be read). Attachments that are not inlined are named by local path in the
/// text.
pub fn prompt_blocks(turn: &Turn, image_ok: bool, images: &[(String, String)]) -> Vec<Value> {
    let mut text = turn.prompt();
    let mut blocks = Vec::new();
    let mut inlined = 0;
    for m in turn.texts.iter().flat_map(|t| &t.media) {
        let is_image = m.content_type.starts_with("image/");
        match &m.path {
            Some(_) if is_image && image_ok && inlined < images.len() => inlined += 1,
            Some(p) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&format!("[attachment ({}): {p}]", m.content_type));
            }
            None => {}
        }
    }
    blocks.push(json!({"type": "text", "text": text}));
    for (mime, data) in images {
        blocks.push(json!({"type": "image", "mimeType": mime, "data": data}));
    }
    blocks
}

/// Seconds before restart `n` (counting from 0): 1, 2, 4 … 30.
pub fn restart_delay(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.min(5)).min(Duration::from_secs(30))
}

/// Whether a finished prompt is an answer (CONTRACT §7): `Ok` to reply with `text`,
/// `Err(why)` for `fail`. Only `end_turn` with text is an answer; a `cancelled` the
/// bridge caused (its `--timeout`) keeps the text the agent wrote until then. Any
/// other stop reason is not an answer, whatever text came with it: `cancelled` the
/// bridge did not ask for (OpenClaw ends a run its gateway interrupted this way,
/// with an "[OpenClaw interruption]" notice as the only text), `refusal`,
/// `max_tokens` and `max_turn_requests` (a reply cut short, or none), and reasons
/// this bridge does not know.
pub fn judge(stop_reason: Option<&str>, text: &str, cancelled_by_us: bool) -> Result<(), String> {
    let has_text = !text.trim().is_empty();
    match stop_reason {
        Some("end_turn") if has_text => Ok(()),
        Some("end_turn") => Err("the agent ended its turn (end_turn) with no text".into()),
        Some("cancelled") if cancelled_by_us && has_text => Ok(()),
        Some("cancelled") if cancelled_by_us => {
            Err("the prompt was cancelled after --timeout with no text".into())
        }
        Some("cancelled") => Err(
            "the agent cancelled the turn itself (stopReason cancelled, not asked for by smsgate)"
                .into(),
        ),
        Some("refusal") => Err("the agent refused the prompt (stopReason refusal)".into()),
        Some("max_tokens") => Err("the agent ran out of tokens (stopReason max_tokens)".into()),
        Some("max_turn_requests") => {
            Err("the agent hit its limit of model requests (stopReason max_turn_requests)".into())
        }
        Some(other) => Err(format!(
            "the agent ended its turn with stopReason {:?}, which is not an answer",
            truncate(other, 40)
        )),
        None => Err("the agent's session/prompt result has no stopReason".into()),
    }
}

/// How many times one turn is tried (a crashed agent restarted, an error answered)
/// before its texts get `fail`: a text that crashes the agent every time must not
/// hold its conversation for ever.
pub const MAX_ATTEMPTS: u32 = 3;

/// What went wrong with an attempt at a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// The agent process went away.
    Gone,
    /// The agent answered a request with an error (or a result we cannot use).
    Remote(String),
    /// The agent does not read its stdin.
    Deaf,
    /// Not worth trying again here (a session id of another conversation).
    Refused(String),
}

/// What to do after attempt `attempt` (from 0) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Ask again (on the next agent process, for `Gone`) after this long.
    Again(Duration),
    /// Give the texts `fail` with this error.
    Fail(String),
}

pub fn after_trouble(trouble: &Trouble, attempt: u32) -> Next {
    let last = attempt.saturating_add(1) >= MAX_ATTEMPTS;
    match trouble {
        Trouble::Deaf => Next::Fail(format!(
            "the agent did not read its stdin ({} MiB queued for it); it was restarted",
            STDIN_BUDGET / 1024 / 1024
        )),
        Trouble::Refused(why) => Next::Fail(why.clone()),
        Trouble::Gone if last => Next::Fail(format!(
            "the agent exited during this turn {MAX_ATTEMPTS} times"
        )),
        Trouble::Gone => Next::Again(Duration::ZERO),
        Trouble::Remote(e) if last => Next::Fail(format!(
            "the agent refused the turn {MAX_ATTEMPTS} times: {e}"
        )),
        Trouble::Remote(_) => Next::Again(restart_delay(attempt.saturating_add(2))),
    }
}

/// One conversation's entry in `sessions.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionEntry {
    #[serde(rename = "sessionId")]
    pub session: String,
    /// When the conversation was last used (Unix seconds, written at most daily).
    #[serde(rename = "lastUsed")]
    pub last_used: u64,
}

/// An entry as read: the older files held the bare session id.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum StoredSession {
    Bare(String),
    Entry(SessionEntry),
}

pub type SessionMap = BTreeMap<String, SessionEntry>;

/// The map as read at `now`: an old bare entry starts its idle clock now; entries
/// idle for longer than `max_idle` are dropped.
pub fn load_map(raw: BTreeMap<String, StoredSession>, now: u64, max_idle: u64) -> SessionMap {
    let mut map: SessionMap = raw
        .into_iter()
        .map(|(conv, e)| {
            let e = match e {
                StoredSession::Bare(session) => SessionEntry {
                    session,
                    last_used: now,
                },
                StoredSession::Entry(e) => e,
            };
            (conv, e)
        })
        .collect();
    prune_map(&mut map, now, max_idle);
    map
}

/// Drops the conversations idle for longer than `max_idle`; returns their sessions.
pub fn prune_map(map: &mut SessionMap, now: u64, max_idle: u64) -> Vec<String> {
    let mut gone = Vec::new();
    map.retain(|_, e| {
        let keep = !state::idle(e.last_used, now, max_idle);
        if !keep {
            gone.push(e.session.clone());
        }
        keep
    });
    gone
}

/// The conversation other than `conv` that session `sid` already belongs to, if any:
/// an agent that hands one session to two conversations would text one person
/// another's replies.
pub fn bound_elsewhere<'a>(map: &'a SessionMap, conv: &str, sid: &str) -> Option<&'a str> {
    map.iter()
        .find(|(c, e)| c.as_str() != conv && e.session == sid)
        .map(|(c, _)| c.as_str())
}

/// The permits (bytes) a line of `len` bytes takes from [`STDIN_BUDGET`]: a line
/// larger than the whole budget is queued alone.
fn permits_for(len: usize) -> u32 {
    len.clamp(1, STDIN_BUDGET) as u32
}

// ---- the connection ---------------------------------------------------------------

#[derive(Debug)]
enum RpcError {
    /// The agent process went away.
    Gone,
    /// A JSON-RPC error, or a result we cannot use.
    Remote(String),
    /// The request found no room for [`STDIN_STALL`]: the agent does not read.
    Deaf,
}

impl From<RpcError> for Trouble {
    fn from(e: RpcError) -> Self {
        match e {
            RpcError::Gone => Trouble::Gone,
            RpcError::Remote(e) => Trouble::Remote(e),
            RpcError::Deaf => Trouble::Deaf,
        }
    }
}

/// The text of one prompt, bounded.
#[derive(Debug, Default)]
struct Collect {
    text: String,
    chars: usize,
    total_chars: usize,
    updates: u64,
    limit: usize,
}

impl Collect {
    fn push(&mut self, s: &str) {
        self.updates += 1;
        let n = s.chars().count();
        self.total_chars += n;
        if self.chars < self.limit {
            let room = self.limit - self.chars;
            self.text.extend(s.chars().take(room));
            self.chars += n.min(room);
        }
    }
}

/// Where the updates of a session go: the prompt running on it, and only while it
/// runs (its `session/prompt` has not been answered).
struct Sink {
    /// The JSON-RPC id of that `session/prompt`.
    prompt: u64,
    collect: Arc<Mutex<Collect>>,
}

/// A line for the agent's stdin and the room it holds in [`STDIN_BUDGET`] until
/// written.
type Queued = (String, tokio::sync::OwnedSemaphorePermit);

struct Conn {
    generation: u64,
    pid: Option<u32>,
    program: String,
    out: mpsc::UnboundedSender<Queued>,
    /// Bytes that may still be queued for the agent's stdin.
    room: Arc<tokio::sync::Semaphore>,
    /// How long a line waits for room.
    stall: Duration,
    /// Set when the agent was killed for not reading its stdin: its turns fail
    /// rather than being asked again of the next process.
    deaf: AtomicBool,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>,
    next_id: AtomicU64,
    /// Session id → the prompt running on it.
    sinks: Mutex<HashMap<String, Sink>>,
    load_session: AtomicBool,
    image: AtomicBool,
    /// Sessions created or loaded by this process (others need `session/load`).
    open: Mutex<HashSet<String>>,
    kill: Notify,
    dropped_updates: crate::logging::LogLimiter,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a line for the agent, waiting for room at most [`Conn::stall`]; an
    /// agent that leaves it full that long is restarted.
    async fn send(&self, line: String) -> Result<(), RpcError> {
        let want = permits_for(line.len() + 1);
        let permit = match tokio::time::timeout(
            self.stall,
            self.room.clone().acquire_many_owned(want),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(RpcError::Gone),
            Err(_) => {
                self.deafened();
                return Err(RpcError::Deaf);
            }
        };
        self.out.send((line, permit)).map_err(|_| RpcError::Gone)
    }

    /// Queues a line only if there is room now.
    fn try_send(&self, line: String) -> bool {
        let Ok(permit) = self
            .room
            .clone()
            .try_acquire_many_owned(permits_for(line.len() + 1))
        else {
            return false;
        };
        self.out.send((line, permit)).is_ok()
    }

    /// The agent leaves its stdin unread: kill it (the supervisor restarts it).
    fn deafened(&self) {
        if !self.deaf.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the ACP agent {} has not read its stdin for {} s with {} MiB queued for it; restarting it (its turns get `fail`)",
                self.program,
                self.stall.as_secs(),
                STDIN_BUDGET / 1024 / 1024
            );
        }
        self.kill.notify_one();
    }

    async fn request(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.request_with(self.next_id(), method, params).await
    }

    async fn request_with(&self, id: u64, method: &str, params: Value) -> Result<Value, RpcError> {
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if let Err(e) = self.send(line.to_string()).await {
            lock(&self.pending).remove(&id);
            return Err(e);
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RpcError::Remote(e)),
            Err(_) => Err(RpcError::Gone),
        }
    }

    /// A notification, if there is room for it now (it is never waited for).
    fn notify(&self, method: &str, params: Value) -> bool {
        let line = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.try_send(line.to_string())
    }

    /// Answers a request of the agent's. It waits for room: while the agent does not
    /// read its stdin, its further requests are not read either (backpressure), and
    /// after [`Conn::stall`] it is restarted.
    async fn respond(&self, id: &Value, result: Result<Value, (i64, &str)>) {
        let line = match result {
            Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
            Err((code, message)) => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
            }
        };
        let _ = self.send(line.to_string()).await;
    }

    /// The process is gone: every waiting request fails with `Gone`, and nothing more
    /// is queued for it.
    fn close(&self) {
        lock(&self.pending).clear();
        self.room.close();
    }
}

/// Removes a prompt's sink when the turn ends, and cancels the prompt if the turn was
/// dropped before the agent finished (the gateway connection went away).
struct PromptGuard {
    conn: Arc<Conn>,
    session: String,
    prompt: u64,
    finished: bool,
}

impl Drop for PromptGuard {
    fn drop(&mut self) {
        {
            let mut sinks = lock(&self.conn.sinks);
            if sinks
                .get(&self.session)
                .is_some_and(|s| s.prompt == self.prompt)
            {
                sinks.remove(&self.session);
            }
        }
        if !self.finished
            && !self
                .conn
                .notify("session/cancel", json!({"sessionId": self.session}))
        {
            tracing::debug!("no room to send session/cancel to the ACP agent");
        }
    }
}

enum LineRead {
    Eof,
    Line,
    TooLong(usize),
}

/// Reads one line into `buf` (without the newline), keeping at most `max` bytes.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut seen = 0usize;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(if seen == 0 {
                LineRead::Eof
            } else if seen > max {
                LineRead::TooLong(seen)
            } else {
                LineRead::Line
            });
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (available.len(), false),
        };
        if seen + take <= max {
            buf.extend_from_slice(&available[..take]);
        }
        seen += take;
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(if seen > max {
                LineRead::TooLong(seen)
            } else {
                LineRead::Line
            });
        }
    }
}

// ---- the bridge -------------------------------------------------------------------

pub struct AcpBridge {
    opts: AcpOptions,
    conn: watch::Receiver<Option<Arc<Conn>>>,
    /// conversation → ACP session, mirrored in `<state>/sessions.json`.
    sessions: Mutex<SessionMap>,
    garbage_log: crate::logging::LogLimiter,
    permission_log: crate::logging::LogLimiter,
    clock: state::Clock,
}

impl AcpBridge {
    /// Starts the agent process (and its supervisor) and returns the bridge.
    pub fn start(opts: AcpOptions) -> Result<Arc<Self>, String> {
        Self::start_with_clock(opts, state::system_clock)
    }

    /// [`Self::start`] with the time taken from `clock` (for idle pruning).
    pub fn start_with_clock(opts: AcpOptions, clock: state::Clock) -> Result<Arc<Self>, String> {
        if opts.argv.is_empty() {
            return Err("agent acp needs the agent's command after `--`".into());
        }
        state::ensure_dir(&opts.state_dir).map_err(|e| e.to_string())?;
        let path = Self::map_path(&opts.state_dir);
        let raw = state::read_json::<BTreeMap<String, StoredSession>>(&path)
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let before = raw.len();
        let sessions = load_map(raw, clock(), state::MAX_IDLE);
        if sessions.len() < before {
            tracing::info!(
                "forgot {} conversation(s) idle for over {} days",
                before - sessions.len(),
                state::MAX_IDLE / 86400
            );
            if let Err(e) = state::write_json(&path, &sessions) {
                tracing::error!("{e}");
            }
        }
        let (tx, rx) = watch::channel(None);
        let bridge = Arc::new(Self {
            opts,
            conn: rx,
            sessions: Mutex::new(sessions),
            garbage_log: crate::logging::LogLimiter::new(5),
            permission_log: crate::logging::LogLimiter::new(2),
            clock,
        });
        tokio::spawn(supervise(bridge.clone(), tx));
        Ok(bridge)
    }

    fn map_path(dir: &Path) -> PathBuf {
        dir.join("sessions.json")
    }

    fn program(&self) -> &str {
        self.opts.argv.first().map_or("?", String::as_str)
    }

    async fn wait_conn(&self, not_generation: u64) -> Arc<Conn> {
        let mut rx = self.conn.clone();
        loop {
            if let Some(c) = rx.borrow_and_update().as_ref() {
                if c.generation != not_generation {
                    return c.clone();
                }
            }
            if rx.changed().await.is_err() {
                // The supervisor is gone (shutting down): wait for the end.
                std::future::pending::<()>().await;
            }
        }
    }

    pub async fn answer(&self, turn: &Turn) -> Answer {
        let mut gone_generation = 0;
        let mut attempt = 0u32;
        loop {
            let conn = self.wait_conn(gone_generation).await;
            let trouble = match self.turn(&conn, turn).await {
                Ok(answer) => return answer,
                // A process that does not read its stdin (it is being killed): its
                // turns fail, whatever became of their requests.
                Err(_) if conn.deaf.load(Ordering::Relaxed) => Trouble::Deaf,
                Err(e) => Trouble::from(e),
            };
            self.after(&conn, turn, &trouble, attempt);
            match after_trouble(&trouble, attempt) {
                Next::Fail(error) => return Answer::retry(error),
                Next::Again(wait) => {
                    if trouble == Trouble::Gone {
                        gone_generation = conn.generation;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
            attempt = attempt.saturating_add(1);
        }
    }

    /// Logs a failed attempt and clears what it may have spoilt.
    fn after(&self, conn: &Conn, turn: &Turn, trouble: &Trouble, attempt: u32) {
        let last = attempt.saturating_add(1) >= MAX_ATTEMPTS;
        match trouble {
            Trouble::Gone if !last => {
                tracing::warn!(conversation = %turn.log_name(), "the ACP agent {} went away during this turn; it is asked again once the agent is back", self.program());
            }
            Trouble::Remote(e) => {
                if !last {
                    tracing::warn!(conversation = %turn.log_name(), "the ACP agent {} refused the turn: {e}; trying again in {} s", self.program(), restart_delay(attempt.saturating_add(2)).as_secs());
                }
                // The session may be what it objects to: reopen it next time.
                lock(&conn.open).clear();
            }
            _ => {}
        }
    }

    async fn turn(&self, conn: &Arc<Conn>, turn: &Turn) -> Result<Answer, RpcError> {
        let session = match self.session(conn, turn).await? {
            Ok(s) => s,
            Err(refused) => return Ok(Answer::retry(refused)),
        };
        let image_ok = conn.image.load(Ordering::Relaxed);
        let images = if image_ok {
            read_images(turn).await
        } else {
            Vec::new()
        };
        let blocks = prompt_blocks(turn, image_ok, &images);
        drop(images);
        let collect = Arc::new(Mutex::new(Collect {
            limit: self.opts.max_chars.saturating_add(1),
            ..Collect::default()
        }));
        let prompt = conn.next_id();
        {
            let mut sinks = lock(&conn.sinks);
            if sinks.contains_key(&session) {
                // One prompt at a time per conversation, and a session belongs to one
                // conversation: this cannot happen unless the map is wrong.
                tracing::error!(conversation = %turn.log_name(), "a prompt is already running on ACP session {}; this turn is refused", truncate(&session, 80));
                return Ok(Answer::retry(
                    "a prompt is already running on this conversation's ACP session",
                ));
            }
            sinks.insert(
                session.clone(),
                Sink {
                    prompt,
                    collect: collect.clone(),
                },
            );
        }
        let mut guard = PromptGuard {
            conn: conn.clone(),
            session: session.clone(),
            prompt,
            finished: false,
        };
        let req = conn.request_with(
            prompt,
            "session/prompt",
            json!({"sessionId": session, "prompt": blocks}),
        );
        tokio::pin!(req);
        let mut cancelled_by_us = false;
        let result = match tokio::time::timeout(self.opts.timeout, &mut req).await {
            Ok(r) => r,
            Err(_) => {
                cancelled_by_us = true;
                tracing::warn!(conversation = %turn.log_name(), "the ACP agent {} did not finish within --timeout {} s; sent session/cancel", self.program(), self.opts.timeout.as_secs());
                if !conn.notify("session/cancel", json!({"sessionId": session})) {
                    // No room even for the cancel: the agent is not reading.
                    conn.deafened();
                }
                match tokio::time::timeout(CANCEL_GRACE, &mut req).await {
                    Ok(Ok(r)) => Ok(r),
                    // Killed for not reading: say so, not "cancelled".
                    Ok(Err(_)) if conn.deaf.load(Ordering::Relaxed) => Err(RpcError::Deaf),
                    Ok(Err(_)) => Ok(json!({"stopReason": "cancelled"})),
                    Err(_) => {
                        tracing::error!("the ACP agent {} did not stop within {} s of session/cancel; restarting it", self.program(), CANCEL_GRACE.as_secs());
                        conn.kill.notify_one();
                        Ok(json!({"stopReason": "cancelled"}))
                    }
                }
            }
        };
        guard.finished = true;
        drop(guard);
        let result = result?;
        let c = lock(&collect);
        let stop = result.get("stopReason").and_then(Value::as_str);
        if c.total_chars > c.chars {
            tracing::warn!(conversation = %turn.log_name(), "the ACP agent wrote {} characters in {} updates; kept the first {}", c.total_chars, c.updates, c.chars);
        }
        tracing::debug!(conversation = %turn.log_name(), stop = stop.unwrap_or("?"), updates = c.updates, "prompt finished");
        Ok(match judge(stop, &c.text, cancelled_by_us) {
            Ok(()) => Answer::Reply(c.text.clone()),
            Err(why) => Answer::retry(why),
        })
    }

    /// Records that `conv` was used now; writes the map when the last written use is
    /// a day old (and forgets idle conversations then).
    fn touch(&self, conn: &Conn, conv: &str) {
        let now = (self.clock)();
        let mut map = lock(&self.sessions);
        let Some(e) = map.get_mut(conv) else { return };
        if !state::touch_due(e.last_used, now) {
            return;
        }
        e.last_used = now;
        self.write_map(conn, &mut map, now);
    }

    /// Writes the map (held locked across the small fsynced write: two conversations
    /// starting at once must not race their snapshots onto the same file), after
    /// dropping the conversations idle for over [`state::MAX_IDLE`].
    fn write_map(&self, conn: &Conn, map: &mut SessionMap, now: u64) {
        let gone = prune_map(map, now, state::MAX_IDLE);
        if !gone.is_empty() {
            tracing::info!(
                "forgot {} conversation(s) idle for over {} days",
                gone.len(),
                state::MAX_IDLE / 86400
            );
            let mut open = lock(&conn.open);
            for sid in &gone {
                open.remove(sid);
            }
        }
        if let Err(e) = state::write_json(&Self::map_path(&self.opts.state_dir), &*map) {
            tracing::error!("{e}; after a restart this conversation starts a new session");
        }
    }

    /// This conversation's session in this agent process: already open, reopened with
    /// `session/load`, or new; `Ok(Err(why))` when the agent's answer is refused.
    async fn session(
        &self,
        conn: &Arc<Conn>,
        turn: &Turn,
    ) -> Result<Result<String, String>, RpcError> {
        let conv = &turn.conversation;
        let known = lock(&self.sessions).get(conv).map(|e| e.session.clone());
        if let Some(sid) = &known {
            self.touch(conn, conv);
            if lock(&conn.open).contains(sid) {
                return Ok(Ok(sid.clone()));
            }
            if conn.load_session.load(Ordering::Relaxed) {
                let params = json!({"sessionId": sid, "cwd": self.opts.cwd, "mcpServers": []});
                match tokio::time::timeout(self.opts.timeout, conn.request("session/load", params))
                    .await
                {
                    Ok(Ok(_)) => {
                        tracing::info!(conversation = %turn.log_name(), "reopened its ACP session with session/load");
                        lock(&conn.open).insert(sid.clone());
                        return Ok(Ok(sid.clone()));
                    }
                    Ok(Err(RpcError::Remote(e))) => {
                        tracing::warn!(conversation = %turn.log_name(), "session/load failed ({e}); starting a new session")
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        tracing::warn!(conversation = %turn.log_name(), "session/load did not finish within --timeout; starting a new session")
                    }
                }
            } else {
                tracing::info!(conversation = %turn.log_name(), "the agent does not offer loadSession; starting a new session");
            }
        } else {
            tracing::debug!(conversation = %turn.log_name(), "no session known for this conversation; starting a new session");
        }
        let params = json!({"cwd": self.opts.cwd, "mcpServers": []});
        let result = tokio::time::timeout(self.opts.timeout, conn.request("session/new", params))
            .await
            .map_err(|_| {
                RpcError::Remote("session/new did not finish within --timeout".into())
            })??;
        let Some(sid) = result.get("sessionId").and_then(Value::as_str) else {
            return Err(RpcError::Remote(format!(
                "session/new returned no sessionId: {}",
                truncate(&result.to_string(), 200)
            )));
        };
        {
            let mut map = lock(&self.sessions);
            if let Some(other) = bound_elsewhere(&map, conv, sid) {
                tracing::error!(
                    conversation = %turn.log_name(),
                    "the ACP agent {} answered session/new with session id {}, which belongs to conversation {}; refused, so that one conversation's replies never reach another (this text gets `fail`)",
                    self.program(),
                    truncate(sid, 80),
                    crate::phone::redact_numbers_in(other)
                );
                return Ok(Err(
                    "the agent gave this conversation a session that belongs to another".into(),
                ));
            }
            map.insert(
                conv.clone(),
                SessionEntry {
                    session: sid.to_string(),
                    last_used: (self.clock)(),
                },
            );
            let now = (self.clock)();
            self.write_map(conn, &mut map, now);
        }
        lock(&conn.open).insert(sid.to_string());
        Ok(Ok(sid.to_string()))
    }

    /// Starts the agent process and runs `initialize`.
    async fn launch(
        self: &Arc<Self>,
        generation: u64,
    ) -> Result<(Arc<Conn>, tokio::process::Child), String> {
        let (program, args) = self.opts.argv.split_first().ok_or("no agent command")?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .current_dir(&self.opts.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {program:?}: {e}"))?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the agent's stdin/stdout are not pipes".into());
        };
        // Unbounded as a channel, bounded in bytes by `room`: each line holds its size
        // in permits until it is written.
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Queued>();
        tokio::spawn(async move {
            while let Some((line, permit)) = out_rx.recv().await {
                if stdin.write_all(line.as_bytes()).await.is_err()
                    || stdin.write_all(b"\n").await.is_err()
                {
                    break;
                }
                drop(permit);
            }
        });
        let conn = Arc::new(Conn {
            generation,
            pid: child.id(),
            program: program.clone(),
            out: out_tx,
            room: Arc::new(tokio::sync::Semaphore::new(STDIN_BUDGET)),
            stall: STDIN_STALL
                .min(self.opts.timeout)
                .max(Duration::from_secs(1)),
            deaf: AtomicBool::new(false),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            sinks: Mutex::new(HashMap::new()),
            load_session: Default::default(),
            image: Default::default(),
            open: Mutex::new(HashSet::new()),
            kill: Notify::new(),
            dropped_updates: crate::logging::LogLimiter::new(1),
        });
        tokio::spawn(read_loop(self.clone(), conn.clone(), stdout));
        let init = json!({
            "protocolVersion": 1,
            "clientCapabilities": {"fs": {"readTextFile": false, "writeTextFile": false}, "terminal": false},
            "clientInfo": {"name": "smsgate", "version": env!("CARGO_PKG_VERSION")},
        });
        let result = match tokio::time::timeout(INIT_TIMEOUT, conn.request("initialize", init))
            .await
        {
            Ok(Ok(v)) => v,
            Ok(Err(RpcError::Gone)) => return Err("it exited before answering initialize".into()),
            Ok(Err(RpcError::Deaf)) => return Err("it does not read its stdin".into()),
            Ok(Err(RpcError::Remote(e))) => return Err(format!("initialize failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "no answer to initialize within {} s",
                    INIT_TIMEOUT.as_secs()
                ))
            }
        };
        let version = result.get("protocolVersion").and_then(Value::as_u64);
        if version != Some(1) {
            tracing::warn!(
                "the ACP agent {} speaks protocol version {version:?}; smsgate speaks 1",
                self.program()
            );
        }
        let caps = result
            .get("agentCapabilities")
            .cloned()
            .unwrap_or(Value::Null);
        conn.load_session.store(
            caps.get("loadSession").and_then(Value::as_bool) == Some(true),
            Ordering::Relaxed,
        );
        conn.image.store(
            caps.pointer("/promptCapabilities/image")
                .and_then(Value::as_bool)
                == Some(true),
            Ordering::Relaxed,
        );
        Ok((conn, child))
    }

    async fn on_request(&self, conn: &Conn, id: &Value, method: &str, params: &Value) {
        if method != "session/request_permission" {
            // Per message, so at debug: an agent can ask thousands of times a second.
            tracing::debug!("the ACP agent {} asked for {}; refused (smsgate offers no file system or terminal)", self.program(), truncate(method, 80));
            conn.respond(
                id,
                Err((
                    -32601,
                    "smsgate offers no file system or terminal to agents",
                )),
            )
            .await;
            return;
        }
        let options = params
            .get("options")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let title = params
            .pointer("/toolCall/title")
            .and_then(Value::as_str)
            .unwrap_or("a tool call");
        let (outcome, said) = match choose_option(&options, self.opts.allow_permissions) {
            Some(option) => {
                let allowed = options.iter().any(|o| {
                    o.get("optionId").and_then(Value::as_str) == Some(option.as_str())
                        && o.get("kind").and_then(Value::as_str) == Some("allow_once")
                });
                (
                    json!({"outcome": {"outcome": "selected", "optionId": option}}),
                    if allowed {
                        "allowed once (--permissions allow)"
                    } else {
                        "rejected (--permissions deny)"
                    },
                )
            }
            None => (
                json!({"outcome": {"outcome": "cancelled"}}),
                "no suitable option offered; answered cancelled",
            ),
        };
        // A decision on the agent's powers is worth a line, but not thousands a second.
        if let Some(dropped) = self.permission_log.allow_now() {
            let more = if dropped > 0 {
                format!(" ({dropped} similar lines not logged)")
            } else {
                String::new()
            };
            tracing::info!(
                "the ACP agent {} asked permission for {}; {said}{more}",
                self.program(),
                truncate(title, 120),
            );
        }
        conn.respond(id, Ok(outcome)).await;
    }

    fn garbage(&self, what: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(dropped) = self.garbage_log.allow(now) {
            let more = if dropped > 0 {
                format!(" ({dropped} similar lines not logged)")
            } else {
                String::new()
            };
            tracing::warn!(
                "the ACP agent {} wrote {what}; ignored{more}",
                self.program()
            );
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

async fn read_images(turn: &Turn) -> Vec<(String, String)> {
    use base64::Engine;
    let mut out = Vec::new();
    for m in turn.texts.iter().flat_map(|t| &t.media) {
        let Some(path) = &m.path else { continue };
        if !m.content_type.starts_with("image/") {
            continue;
        }
        let ok = tokio::fs::metadata(path)
            .await
            .is_ok_and(|md| md.len() <= MAX_IMAGE);
        if !ok {
            break;
        }
        match tokio::fs::read(path).await {
            Ok(bytes) => out.push((
                m.content_type.clone(),
                base64::engine::general_purpose::STANDARD.encode(bytes),
            )),
            // Pictures are inlined in order; the rest are named by path.
            Err(_) => break,
        }
    }
    out
}

async fn read_loop(bridge: Arc<AcpBridge>, conn: Arc<Conn>, stdout: tokio::process::ChildStdout) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        match read_line_bounded(&mut reader, &mut buf, MAX_LINE).await {
            Ok(LineRead::Eof) | Err(_) => break,
            Ok(LineRead::TooLong(n)) => {
                bridge.garbage(&format!(
                    "a line of {n} bytes (over {} MiB)",
                    MAX_LINE / 1024 / 1024
                ));
            }
            Ok(LineRead::Line) => {
                let line = String::from_utf8_lossy(&buf);
                if line.trim().is_empty() {
                    continue;
                }
                match classify(&line) {
                    Incoming::Response { id, result } => {
                        let waiting = lock(&conn.pending).remove(&id);
                        if let Some(tx) = waiting {
                            // A prompt that is answered takes no more updates: what
                            // comes after is no part of its reply.
                            lock(&conn.sinks).retain(|_, s| s.prompt != id);
                            let _ = tx.send(result);
                        }
                    }
                    Incoming::Request { id, method, params } => {
                        bridge.on_request(&conn, &id, &method, &params).await;
                    }
                    Incoming::Notification { method, params } => {
                        if method == "session/update" {
                            let sid = params.get("sessionId").and_then(Value::as_str);
                            let update = params.get("update").unwrap_or(&Value::Null);
                            // Updates go to the prompt running on their session only.
                            // Others (a session/load replaying history, an agent
                            // writing to a session with no prompt running) are never
                            // texted.
                            let sink = sid
                                .and_then(|s| lock(&conn.sinks).get(s).map(|k| k.collect.clone()));
                            match sink {
                                Some(sink) => {
                                    let mut c = lock(&sink);
                                    match chunk_text(update) {
                                        Some(t) => c.push(t),
                                        None => c.updates += 1,
                                    }
                                }
                                None => {
                                    if conn.dropped_updates.allow_now().is_some() {
                                        tracing::debug!(
                                            "an update for ACP session {:?}, which has no prompt running; dropped",
                                            sid.map(|s| truncate(s, 80))
                                        );
                                    }
                                }
                            }
                        }
                    }
                    Incoming::Garbage(why) => {
                        bridge.garbage(&format!(
                            "a line that is not JSON-RPC: {why}: {:?}",
                            truncate(&line, 80)
                        ));
                    }
                }
            }
        }
    }
    conn.close();
}

async fn supervise(bridge: Arc<AcpBridge>, tx: watch::Sender<Option<Arc<Conn>>>) {
    let mut failures = 0u32;
    let mut generation = 0u64;
    loop {
        generation += 1;
        let started = Instant::now();
        match bridge.launch(generation).await {
            Ok((conn, mut child)) => {
                tracing::info!(
                    pid = conn.pid.unwrap_or(0),
                    loadSession = conn.load_session.load(Ordering::Relaxed),
                    image = conn.image.load(Ordering::Relaxed),
                    "ACP agent {} is running",
                    bridge.program()
                );
                let _ = tx.send(Some(conn.clone()));
                let status = tokio::select! {
                    s = child.wait() => s,
                    () = conn.kill.notified() => {
                        let _ = child.start_kill();
                        child.wait().await
                    }
                };
                let _ = tx.send(None);
                conn.close();
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                tracing::warn!("the ACP agent {} exited ({status})", bridge.program());
            }
            Err(e) => {
                tracing::error!("cannot start the ACP agent {}: {e}", bridge.program());
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        let wait = restart_delay(failures);
        failures = failures.saturating_add(1);
        tracing::info!(
            "restarting the ACP agent {} in {} s; unanswered texts are asked again",
            bridge.program(),
            wait.as_secs()
        );
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::{InboundMedia, InboundMessage};

    #[test]
    fn classify_table() {
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","id":3,"result":{"stopReason":"end_turn"}}"#),
            Incoming::Response {
                id: 3,
                result: Ok(json!({"stopReason": "end_turn"}))
            }
        );
        assert_eq!(
            classify(
                r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32000,"message":"auth required"}}"#
            ),
            Incoming::Response {
                id: 4,
                result: Err("auth required (code -32000)".into())
            }
        );
        assert!(matches!(
            classify(r#"{"jsonrpc":"2.0","id":"p1","method":"session/request_permission","params":{}}"#),
            Incoming::Request { method, .. } if method == "session/request_permission"
        ));
        assert!(matches!(
            classify(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s"}}"#),
            Incoming::Notification { method, .. } if method == "session/update"
        ));
        for bad in [
            "hello",
            "[1]",
            "{}",
            r#"{"id":1}"#,
            r#"{"id":"x","result":1}"#,
            "42",
        ] {
            assert!(matches!(classify(bad), Incoming::Garbage(_)), "{bad}");
        }
    }

    #[test]
    fn permission_table() {
        let all = vec![
            json!({"optionId": "a1", "kind": "allow_once", "name": "Allow"}),
            json!({"optionId": "aa", "kind": "allow_always", "name": "Always"}),
            json!({"optionId": "r1", "kind": "reject_once", "name": "Reject"}),
            json!({"optionId": "ra", "kind": "reject_always", "name": "Never"}),
        ];
        assert_eq!(choose_option(&all, false).as_deref(), Some("r1"));
        assert_eq!(choose_option(&all, true).as_deref(), Some("a1"));
        let always_only = vec![all[1].clone(), all[3].clone()];
        assert_eq!(choose_option(&always_only, true).as_deref(), Some("ra"));
        assert_eq!(choose_option(&always_only, false).as_deref(), Some("ra"));
        assert_eq!(choose_option(&all[..2], false), None);
        assert_eq!(choose_option(&[], true), None);
    }

    #[test]
    fn chunks_and_collect() {
        let chunk = json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "hi"}});
        assert_eq!(chunk_text(&chunk), Some("hi"));
        let thought = json!({"sessionUpdate": "agent_thought_chunk", "content": {"type": "text", "text": "hmm"}});
        assert_eq!(chunk_text(&thought), None);
        let user = json!({"sessionUpdate": "user_message_chunk", "content": {"type": "text", "text": "q"}});
        assert_eq!(chunk_text(&user), None);
        let image = json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "image", "data": ""}});
        assert_eq!(chunk_text(&image), None);
        let mut c = Collect {
            limit: 5,
            ..Collect::default()
        };
        for _ in 0..1000 {
            c.push("abc");
        }
        assert_eq!(c.text, "abcab");
        assert_eq!(c.total_chars, 3000);
        assert_eq!(c.updates, 1000);
    }

    #[test]
    fn blocks_and_delays() {
        let turn = Turn {
            conversation: "c".into(),
            texts: vec![InboundMessage {
                id: "SM1".into(),
                account: "a".into(),
                from: "+15557654321".into(),
                to: "+15551234567".into(),
                text: "look".into(),
                media: vec![
                    InboundMedia {
                        url: "u".into(),
                        content_type: "image/png".into(),
                        path: Some("/m/1.png".into()),
                    },
                    InboundMedia {
                        url: "u".into(),
                        content_type: "audio/amr".into(),
                        path: Some("/m/2.amr".into()),
                    },
                ],
                conversation: Some("c".into()),
            }],
        };
        let b = prompt_blocks(&turn, false, &[]);
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0]["text"],
            "look\n[attachment (image/png): /m/1.png]\n[attachment (audio/amr): /m/2.amr]"
        );
        let b = prompt_blocks(&turn, true, &[("image/png".into(), "AAAA".into())]);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0]["text"], "look\n[attachment (audio/amr): /m/2.amr]");
        assert_eq!(
            b[1],
            json!({"type": "image", "mimeType": "image/png", "data": "AAAA"})
        );
        let d: Vec<u64> = (0..8).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn judge_table() {
        let interruption =
            "[OpenClaw interruption] The gateway restarted while this run was in progress.";
        // (stopReason, text, cancelled by us, an answer?)
        let cases: &[(Option<&str>, &str, bool, bool)] = &[
            (Some("end_turn"), "hello", false, true),
            (Some("end_turn"), "hello", true, true),
            // OpenClaw when the model fails for good: end_turn, no chunk
            (Some("end_turn"), "", false, false),
            (Some("end_turn"), " \n\t", false, false),
            // our --timeout: the text so far is the answer; none is not one
            (Some("cancelled"), "half done", true, true),
            (Some("cancelled"), "", true, false),
            // a cancel we did not send (OpenClaw's gateway restarted mid-run)
            (Some("cancelled"), interruption, false, false),
            (Some("cancelled"), "", false, false),
            (Some("cancelled"), "a whole reply", false, false),
            (Some("refusal"), "I can't", false, false),
            (Some("refusal"), "", true, false),
            (Some("max_tokens"), "a reply cut sh", false, false),
            (Some("max_tokens"), "", false, false),
            (Some("max_turn_requests"), "partial", false, false),
            (Some("something_new"), "text", false, false),
            (None, "text", false, false),
        ];
        for (stop, text, ours, want) in cases {
            let got = judge(*stop, text, *ours);
            assert_eq!(got.is_ok(), *want, "{stop:?} {text:?} {ours}: {got:?}");
            if let Err(why) = got {
                // The reason names the stop reason and never the text.
                assert!(!why.contains(text) || text.trim().is_empty(), "{why}");
            }
        }
        assert!(judge(Some("cancelled"), interruption, false)
            .unwrap_err()
            .contains("not asked for by smsgate"));
        assert!(
            judge(Some("x".repeat(500).as_str()), "t", false)
                .unwrap_err()
                .chars()
                .count()
                < 200
        );
    }

    #[test]
    fn after_trouble_table() {
        let again = |s| Next::Again(Duration::from_secs(s));
        let remote = Trouble::Remote("auth required (code -32000)".into());
        assert_eq!(after_trouble(&Trouble::Gone, 0), again(0));
        assert_eq!(after_trouble(&Trouble::Gone, 1), again(0));
        assert!(
            matches!(after_trouble(&Trouble::Gone, 2), Next::Fail(e) if e.contains("exited during this turn 3 times"))
        );
        assert_eq!(after_trouble(&remote, 0), again(4));
        assert_eq!(after_trouble(&remote, 1), again(8));
        assert!(matches!(after_trouble(&remote, 2), Next::Fail(e) if e.contains("auth required")));
        for attempt in [0, 1, 2, 50] {
            assert!(
                matches!(after_trouble(&Trouble::Deaf, attempt), Next::Fail(e) if e.contains("did not read its stdin"))
            );
            assert_eq!(
                after_trouble(&Trouble::Refused("no".into()), attempt),
                Next::Fail("no".into())
            );
        }
        assert!(matches!(
            after_trouble(&Trouble::Gone, u32::MAX),
            Next::Fail(_)
        ));
    }

    #[test]
    fn session_map_binding_and_pruning() {
        const DAY: u64 = 86400;
        let now = 1000 * DAY;
        let raw: BTreeMap<String, StoredSession> = serde_json::from_str(
            r#"{"c-old":"sess-1",
                "c-a":{"sessionId":"sess-a","lastUsed":86400000},
                "c-idle":{"sessionId":"sess-i","lastUsed":1},
                "c-29":{"sessionId":"sess-29","lastUsed":83894400}}"#,
        )
        .unwrap();
        let mut map = load_map(raw, now, state::MAX_IDLE);
        // The bare entry of an older file starts its clock now; the idle one is gone.
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(keys, ["c-29", "c-a", "c-old"]);
        assert_eq!(map["c-old"].last_used, now);
        assert_eq!(map["c-29"].last_used, now - 29 * DAY);
        // Written back in the new form, read again the same.
        let text = serde_json::to_string(&map).unwrap();
        let again: BTreeMap<String, StoredSession> = serde_json::from_str(&text).unwrap();
        assert_eq!(load_map(again, now, state::MAX_IDLE), map);
        // One session, one conversation.
        assert_eq!(bound_elsewhere(&map, "c-b", "sess-a"), Some("c-a"));
        assert_eq!(bound_elsewhere(&map, "c-a", "sess-a"), None);
        assert_eq!(bound_elsewhere(&map, "c-b", "sess-new"), None);
        // Two days later c-29 is past 30 days.
        assert_eq!(
            prune_map(&mut map, now + 2 * DAY, state::MAX_IDLE),
            ["sess-29"]
        );
        assert_eq!(map.len(), 2);
        assert!(prune_map(&mut map, now + 2 * DAY, state::MAX_IDLE).is_empty());
        // Once forgotten, its session id may be given out again.
        assert_eq!(bound_elsewhere(&map, "c-b", "sess-29"), None);
    }

    #[test]
    fn stdin_permits() {
        assert_eq!(permits_for(0), 1);
        assert_eq!(permits_for(100), 100);
        assert_eq!(permits_for(STDIN_BUDGET * 3) as usize, STDIN_BUDGET);
    }

    #[tokio::test]
    async fn bounded_lines() {
        let data: &[u8] = b"short\nwaaaaaaaaaaaaay too long\nok\nlast";
        let mut r = BufReader::with_capacity(4, data);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line_bounded(&mut r, &mut buf, 8).await.unwrap() {
                LineRead::Eof => break,
                LineRead::Line => got.push(String::from_utf8(buf.clone()).unwrap()),
                LineRead::TooLong(n) => got.push(format!("too long: {n}")),
            }
        }
        assert_eq!(got, ["short", "too long: 24", "ok", "last"]);
    }
}
