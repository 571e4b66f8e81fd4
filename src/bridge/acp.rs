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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::{state, Turn};

/// A line from the agent longer than this is skipped (and logged), not buffered.
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// A picture larger than this is passed as its path, not inlined.
const MAX_IMAGE: u64 = 10 * 1024 * 1024;
const INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an agent has to stop after `session/cancel` before it is restarted.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

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

// ---- the connection ---------------------------------------------------------------

#[derive(Debug)]
enum RpcError {
    /// The agent process went away.
    Gone,
    /// A JSON-RPC error, or a result we cannot use.
    Remote(String),
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

struct Conn {
    generation: u64,
    pid: Option<u32>,
    out: mpsc::UnboundedSender<String>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>,
    next_id: AtomicU64,
    sinks: Mutex<HashMap<String, Arc<Mutex<Collect>>>>,
    load_session: std::sync::atomic::AtomicBool,
    image: std::sync::atomic::AtomicBool,
    /// Sessions created or loaded by this process (others need `session/load`).
    open: Mutex<HashSet<String>>,
    kill: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    async fn request(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if self.out.send(line.to_string()).is_err() {
            lock(&self.pending).remove(&id);
            return Err(RpcError::Gone);
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RpcError::Remote(e)),
            Err(_) => Err(RpcError::Gone),
        }
    }

    fn notify(&self, method: &str, params: Value) {
        let line = json!({"jsonrpc": "2.0", "method": method, "params": params});
        let _ = self.out.send(line.to_string());
    }

    fn respond(&self, id: &Value, result: Result<Value, (i64, &str)>) {
        let line = match result {
            Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
            Err((code, message)) => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
            }
        };
        let _ = self.out.send(line.to_string());
    }

    /// The process is gone: every waiting request fails with `Gone`.
    fn close(&self) {
        lock(&self.pending).clear();
    }
}

/// Removes a prompt's sink when the turn ends, and cancels the prompt if the turn was
/// dropped before the agent finished (the gateway connection went away).
struct PromptGuard {
    conn: Arc<Conn>,
    session: String,
    finished: bool,
}

impl Drop for PromptGuard {
    fn drop(&mut self) {
        lock(&self.conn.sinks).remove(&self.session);
        if !self.finished {
            self.conn
                .notify("session/cancel", json!({"sessionId": self.session}));
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
    /// conversation → ACP session id, mirrored in `<state>/sessions.json`.
    sessions: Mutex<BTreeMap<String, String>>,
    garbage_log: crate::logging::LogLimiter,
}

impl AcpBridge {
    /// Starts the agent process (and its supervisor) and returns the bridge.
    pub fn start(opts: AcpOptions) -> Result<Arc<Self>, String> {
        if opts.argv.is_empty() {
            return Err("agent acp needs the agent's command after `--`".into());
        }
        state::ensure_dir(&opts.state_dir).map_err(|e| e.to_string())?;
        let sessions =
            state::read_json::<BTreeMap<String, String>>(&Self::map_path(&opts.state_dir))
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
        let (tx, rx) = watch::channel(None);
        let bridge = Arc::new(Self {
            opts,
            conn: rx,
            sessions: Mutex::new(sessions),
            garbage_log: crate::logging::LogLimiter::new(5),
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

    pub async fn answer(&self, turn: &Turn) -> Option<String> {
        let mut gone_generation = 0;
        let mut attempt = 0u32;
        loop {
            let conn = self.wait_conn(gone_generation).await;
            match self.turn(&conn, turn).await {
                Ok(reply) => return reply,
                Err(RpcError::Gone) => {
                    tracing::warn!(conversation = %turn.log_name(), "the ACP agent {} went away during this turn; it is asked again once the agent is back", self.program());
                    gone_generation = conn.generation;
                }
                Err(RpcError::Remote(e)) => {
                    let wait = restart_delay(attempt + 2);
                    tracing::warn!(conversation = %turn.log_name(), "the ACP agent {} refused the turn: {e}; trying again in {} s, the message stays unacknowledged", self.program(), wait.as_secs());
                    // The session may be what it objects to: reopen it next time.
                    lock(&conn.open).clear();
                    tokio::time::sleep(wait).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    async fn turn(&self, conn: &Arc<Conn>, turn: &Turn) -> Result<Option<String>, RpcError> {
        let session = self.session(conn, turn).await?;
        let image_ok = conn.image.load(Ordering::Relaxed);
        let images = if image_ok {
            read_images(turn).await
        } else {
            Vec::new()
        };
        let blocks = prompt_blocks(turn, image_ok, &images);
        let collect = Arc::new(Mutex::new(Collect {
            limit: self.opts.max_chars.saturating_add(1),
            ..Collect::default()
        }));
        lock(&conn.sinks).insert(session.clone(), collect.clone());
        let mut guard = PromptGuard {
            conn: conn.clone(),
            session: session.clone(),
            finished: false,
        };
        let req = conn.request(
            "session/prompt",
            json!({"sessionId": session, "prompt": blocks}),
        );
        tokio::pin!(req);
        let result = match tokio::time::timeout(self.opts.timeout, &mut req).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(conversation = %turn.log_name(), "the ACP agent {} did not finish within --timeout {} s; sent session/cancel", self.program(), self.opts.timeout.as_secs());
                conn.notify("session/cancel", json!({"sessionId": session}));
                match tokio::time::timeout(CANCEL_GRACE, &mut req).await {
                    Ok(r) => r,
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
        let stop = result
            .get("stopReason")
            .and_then(Value::as_str)
            .unwrap_or("?");
        if c.total_chars > c.chars {
            tracing::warn!(conversation = %turn.log_name(), "the ACP agent wrote {} characters in {} updates; kept the first {}", c.total_chars, c.updates, c.chars);
        }
        tracing::debug!(conversation = %turn.log_name(), stop, updates = c.updates, "prompt finished");
        Ok(Some(c.text.clone()).filter(|t| !t.trim().is_empty()))
    }

    /// This conversation's session in this agent process: already open, reopened with
    /// `session/load`, or new.
    async fn session(&self, conn: &Arc<Conn>, turn: &Turn) -> Result<String, RpcError> {
        let conv = &turn.conversation;
        let known = lock(&self.sessions).get(conv).cloned();
        if let Some(sid) = &known {
            if lock(&conn.open).contains(sid) {
                return Ok(sid.clone());
            }
            if conn.load_session.load(Ordering::Relaxed) {
                let params = json!({"sessionId": sid, "cwd": self.opts.cwd, "mcpServers": []});
                match tokio::time::timeout(self.opts.timeout, conn.request("session/load", params))
                    .await
                {
                    Ok(Ok(_)) => {
                        tracing::info!(conversation = %turn.log_name(), "reopened its ACP session with session/load");
                        lock(&conn.open).insert(sid.clone());
                        return Ok(sid.clone());
                    }
                    Ok(Err(RpcError::Gone)) => return Err(RpcError::Gone),
                    Ok(Err(RpcError::Remote(e))) => {
                        tracing::warn!(conversation = %turn.log_name(), "session/load failed ({e}); starting a new session")
                    }
                    Err(_) => {
                        tracing::warn!(conversation = %turn.log_name(), "session/load did not finish within --timeout; starting a new session")
                    }
                }
            } else {
                tracing::info!(conversation = %turn.log_name(), "the agent does not offer loadSession; starting a new session");
            }
        } else {
            tracing::info!(conversation = %turn.log_name(), "no session known for this conversation; starting a new session");
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
            // Held across the (small, fsynced) write: two conversations starting at
            // once must not race their snapshots onto the same file.
            let mut map = lock(&self.sessions);
            map.insert(conv.clone(), sid.to_string());
            if let Err(e) = state::write_json(&Self::map_path(&self.opts.state_dir), &*map) {
                tracing::error!("{e}; after a restart this conversation starts a new session");
            }
        }
        lock(&conn.open).insert(sid.to_string());
        Ok(sid.to_string())
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
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(mut line) = out_rx.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        let conn = Arc::new(Conn {
            generation,
            pid: child.id(),
            out: out_tx,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            sinks: Mutex::new(HashMap::new()),
            load_session: Default::default(),
            image: Default::default(),
            open: Mutex::new(HashSet::new()),
            kill: Notify::new(),
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

    fn on_request(&self, conn: &Conn, id: &Value, method: &str, params: &Value) {
        if method != "session/request_permission" {
            conn.respond(
                id,
                Err((
                    -32601,
                    "smsgate offers no file system or terminal to agents",
                )),
            );
            tracing::info!("the ACP agent {} asked for {method}; refused (smsgate offers no file system or terminal)", self.program());
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
        let outcome = match choose_option(&options, self.opts.allow_permissions) {
            Some(option) => {
                let allowed = options.iter().any(|o| {
                    o.get("optionId").and_then(Value::as_str) == Some(option.as_str())
                        && o.get("kind").and_then(Value::as_str) == Some("allow_once")
                });
                tracing::info!(
                    "the ACP agent {} asked permission for {}; {}",
                    self.program(),
                    truncate(title, 120),
                    if allowed {
                        "allowed once (--permissions allow)"
                    } else {
                        "rejected (--permissions deny)"
                    }
                );
                json!({"outcome": {"outcome": "selected", "optionId": option}})
            }
            None => {
                tracing::info!("the ACP agent {} asked permission for {} without a suitable option; answered cancelled", self.program(), truncate(title, 120));
                json!({"outcome": {"outcome": "cancelled"}})
            }
        };
        conn.respond(id, Ok(outcome));
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
                        if let Some(tx) = lock(&conn.pending).remove(&id) {
                            let _ = tx.send(result);
                        }
                    }
                    Incoming::Request { id, method, params } => {
                        bridge.on_request(&conn, &id, &method, &params);
                    }
                    Incoming::Notification { method, params } => {
                        if method == "session/update" {
                            let sid = params.get("sessionId").and_then(Value::as_str);
                            let update = params.get("update").unwrap_or(&Value::Null);
                            // Updates of a session without a prompt running (a
                            // session/load replaying history) are never texted.
                            if let Some(sink) = sid.and_then(|s| lock(&conn.sinks).get(s).cloned())
                            {
                                let mut c = lock(&sink);
                                match chunk_text(update) {
                                    Some(t) => c.push(t),
                                    None => c.updates += 1,
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
