//! The conversation mapping: conversation → ACP session (`sessions.json`), one turn
//! per prompt, what a finished prompt means (`judge`), when to ask again
//! (`after_trouble`), and the bridge that carries them out on a [`Conn`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch, Notify};

use super::wire::{self, ContentBlock};
use super::*;
use crate::bridge::{state, Answer, Turn};

/// The option for an approver's decision (CONTRACT §9): the agent's own option of the
/// matching kind, else a reject option; `timeout`, `cancelled` and `deny` reject.
/// `None`: no suitable option (answered `cancelled`).
pub(crate) fn option_for(options: &[wire::PermissionOption], decision: &str) -> Option<String> {
    let find = |kind: wire::PermissionOptionKind| {
        options
            .iter()
            .find(|o| o.kind == kind)
            .map(|o| o.option_id.0.to_string())
    };
    let wanted = match decision {
        "allow_once" => find(wire::PermissionOptionKind::AllowOnce),
        "allow_always" => find(wire::PermissionOptionKind::AllowAlways),
        _ => None,
    };
    wanted.or_else(|| wire::choose_option(options, false))
}

/// What a person is asked about a permission request: a title from the tool call's
/// title and kind, a detail from its raw input (the command, else the file, else the
/// input itself) or its content (text, or a diff's file), else its locations.
pub(crate) fn permission_ask(params: &Value) -> (String, String) {
    let call = params.get("toolCall").unwrap_or(&Value::Null);
    let name = call
        .get("title")
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .unwrap_or("a tool call");
    let title = match call.get("kind").and_then(Value::as_str) {
        Some(kind) if !kind.is_empty() => format!("{name} ({kind})"),
        _ => name.to_string(),
    };
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.iter().all(Value::is_string) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    };
    let raw = call.get("rawInput").unwrap_or(&Value::Null);
    let from_raw = [
        "command",
        "cmd",
        "path",
        "file_path",
        "abs_path",
        "filePath",
        "url",
    ]
    .iter()
    .find_map(|k| raw.get(k).and_then(text))
    .or_else(|| match raw {
        Value::Null => None,
        Value::Object(o) if o.is_empty() => None,
        other => Some(other.to_string()),
    });
    let from_content = || {
        call.get("content")?.as_array()?.iter().find_map(|c| {
            match c.get("type").and_then(Value::as_str) {
                Some("diff") => c.get("path").and_then(Value::as_str).map(String::from),
                Some("content") => c
                    .pointer("/content/text")
                    .and_then(Value::as_str)
                    .map(String::from),
                _ => None,
            }
        })
    };
    let from_locations = || {
        call.get("locations")?
            .as_array()?
            .iter()
            .find_map(|l| l.get("path").and_then(Value::as_str).map(String::from))
    };
    let detail = from_raw
        .or_else(from_content)
        .or_else(from_locations)
        .unwrap_or_default();
    // Cut early: the daemon keeps and texts far less (CONTRACT §9).
    (truncate(&title, 500), truncate(&detail, 2000))
}

/// A media item a session update adds to the reply (CONTRACT §10): an agent message
/// chunk's `image` block, or a `resource` (or `resource_link`) block carrying inline
/// base64 data of an image, audio, video or PDF type. Returns the reply line's media
/// item (`{data, contentType, filename}`) and the length of its base64. Nothing is
/// ever read from a URI the agent names: only inline data counts.
pub(crate) fn chunk_media(update: &Value) -> Option<(Value, usize)> {
    if update.get("sessionUpdate").and_then(Value::as_str) != Some("agent_message_chunk") {
        return None;
    }
    let content = update.get("content")?;
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    let (data, mime, uri) = match content.get("type").and_then(Value::as_str)? {
        "image" => (
            str_of(content, "data")?,
            str_of(content, "mimeType"),
            str_of(content, "uri"),
        ),
        "resource" => {
            let r = content.get("resource")?;
            (str_of(r, "blob")?, str_of(r, "mimeType"), str_of(r, "uri"))
        }
        "resource_link" => (
            str_of(content, "data").or_else(|| str_of(content, "blob"))?,
            str_of(content, "mimeType"),
            str_of(content, "name").or_else(|| str_of(content, "uri")),
        ),
        _ => return None,
    };
    let kind_ok = |m: &str| {
        m.starts_with("image/")
            || m.starts_with("audio/")
            || m.starts_with("video/")
            || m == "application/pdf"
    };
    if content.get("type").and_then(Value::as_str) != Some("image")
        && !mime.as_deref().is_some_and(kind_ok)
    {
        return None;
    }
    let filename = uri.map(|u| {
        u.rsplit('/')
            .next()
            .unwrap_or_default()
            .chars()
            .take(60)
            .collect::<String>()
    });
    let len = data.len();
    Some((
        json!({"data": data, "contentType": mime, "filename": filename}),
        len,
    ))
}

/// The prompt's content blocks: one `text` block, then an `image` block per picture
/// when the agent takes images (`images` holds (mimeType, base64) of the ones that
/// could be read). Attachments that are not inlined are named by local path in the
/// text.
pub(crate) fn prompt_blocks(
    turn: &Turn,
    image_ok: bool,
    images: &[(String, String)],
) -> Vec<ContentBlock> {
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
    blocks.push(wire::text_block(text));
    for (mime, data) in images {
        blocks.push(wire::image_block(mime, data));
    }
    blocks
}

/// Seconds before restart `n` (counting from 0): 1, 2, 4 … 30.
pub(crate) fn restart_delay(n: u32) -> Duration {
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
pub(crate) fn judge(
    stop_reason: Option<&str>,
    text: &str,
    cancelled_by_us: bool,
) -> Result<(), String> {
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
pub(crate) const MAX_ATTEMPTS: u32 = 3;

/// What went wrong with an attempt at a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trouble {
    /// The agent process went away.
    Gone,
    /// The agent answered a request with an error (or a result we cannot use).
    Remote(String),
    /// The agent does not read its stdin.
    Deaf,
    /// Not worth trying again here. Unbuilt today (a session id of another
    /// conversation fails the turn directly), kept so the table covers it.
    #[cfg_attr(not(test), allow(dead_code))]
    Refused(String),
}

/// What to do after attempt `attempt` (from 0) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Ask again (on the next agent process, for `Gone`) after this long.
    Again(Duration),
    /// Give the texts `fail` with this error.
    Fail(String),
}

pub(crate) fn after_trouble(trouble: &Trouble, attempt: u32) -> Next {
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
pub(crate) struct SessionEntry {
    #[serde(rename = "sessionId")]
    pub(crate) session: String,
    /// When the conversation was last used (Unix seconds, written at most daily).
    #[serde(rename = "lastUsed")]
    pub(crate) last_used: u64,
}

/// An entry as read: the older files held the bare session id.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum StoredSession {
    Bare(String),
    Entry(SessionEntry),
}

pub(crate) type SessionMap = BTreeMap<String, SessionEntry>;

/// The map as read at `now`: an old bare entry starts its idle clock now; entries
/// idle for longer than `max_idle` are dropped.
pub(crate) fn load_map(
    raw: BTreeMap<String, StoredSession>,
    now: u64,
    max_idle: u64,
) -> SessionMap {
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
pub(crate) fn prune_map(map: &mut SessionMap, now: u64, max_idle: u64) -> Vec<String> {
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
pub(crate) fn bound_elsewhere<'a>(map: &'a SessionMap, conv: &str, sid: &str) -> Option<&'a str> {
    map.iter()
        .find(|(c, e)| c.as_str() != conv && e.session == sid)
        .map(|(c, _)| c.as_str())
}

// ---- the bridge -------------------------------------------------------------------

pub(crate) struct AcpBridge {
    opts: AcpOptions,
    conn: watch::Receiver<Option<Arc<Conn>>>,
    /// conversation → ACP session, mirrored in `<state>/sessions.json`.
    sessions: Mutex<SessionMap>,
    garbage_log: crate::logging::LogLimiter,
    permission_log: crate::logging::LogLimiter,
    clock: state::Clock,
    /// `--permissions ask`: the asks on the socket.
    asker: Option<Arc<crate::bridge::ask::Asker>>,
}

impl AcpBridge {
    /// Starts the agent process (and its supervisor) and returns the bridge.
    pub(crate) fn start(opts: AcpOptions) -> Result<Arc<Self>, String> {
        Self::start_with_clock(opts, state::system_clock)
    }

    /// [`Self::start`] with the time taken from `clock` (for idle pruning).
    pub(crate) fn start_with_clock(
        opts: AcpOptions,
        clock: state::Clock,
    ) -> Result<Arc<Self>, String> {
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
            conn: rx,
            sessions: Mutex::new(sessions),
            garbage_log: crate::logging::LogLimiter::new(5),
            permission_log: crate::logging::LogLimiter::new(2),
            asker: opts
                .ask_permissions
                .then(|| Arc::new(crate::bridge::ask::Asker::default())),
            opts,
            clock,
        });
        tokio::spawn(supervise(bridge.clone(), tx));
        Ok(bridge)
    }

    pub(crate) fn asker(&self) -> Option<Arc<crate::bridge::ask::Asker>> {
        self.asker.clone()
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

    pub(crate) async fn answer(&self, turn: &Turn) -> Answer {
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
        let req = conn.request_with(prompt, wire::SESSION_PROMPT, wire::prompt(&session, blocks));
        tokio::pin!(req);
        let mut cancelled_by_us = false;
        let result = match tokio::time::timeout(self.opts.timeout, &mut req).await {
            Ok(r) => r,
            Err(_) => {
                cancelled_by_us = true;
                tracing::warn!(conversation = %turn.log_name(), "the ACP agent {} did not finish within --timeout {} s; sent session/cancel", self.program(), self.opts.timeout.as_secs());
                if let Some(a) = &self.asker {
                    a.cancel_session(&session);
                }
                if !conn.notify(wire::SESSION_CANCEL, wire::cancel(&session)) {
                    // No room even for the cancel: the agent is not reading.
                    conn.deafened();
                }
                match tokio::time::timeout(CANCEL_GRACE, &mut req).await {
                    Ok(Ok(r)) => Ok(r),
                    // Killed for not reading: say so, not "cancelled".
                    Ok(Err(_)) if conn.deaf.load(Ordering::Relaxed) => Err(RpcError::Deaf),
                    Ok(Err(_)) => Ok(wire::cancelled_answer()),
                    Err(_) => {
                        tracing::error!("the ACP agent {} did not stop within {} s of session/cancel; restarting it", self.program(), CANCEL_GRACE.as_secs());
                        conn.kill.notify_one();
                        Ok(wire::cancelled_answer())
                    }
                }
            }
        };
        guard.finished = true;
        drop(guard);
        let result = result?;
        let c = lock(&collect);
        let stop = wire::stop_reason(&result);
        let stop = stop.as_deref();
        if c.total_chars > c.chars {
            tracing::warn!(conversation = %turn.log_name(), "the ACP agent wrote {} characters in {} updates; kept the first {}", c.total_chars, c.updates, c.chars);
        }
        if c.media_dropped > 0 {
            tracing::warn!(conversation = %turn.log_name(), "the ACP agent sent more media than one message takes; left out {} item(s)", c.media_dropped);
        }
        tracing::debug!(conversation = %turn.log_name(), stop = stop.unwrap_or("?"), updates = c.updates, media = c.media.len(), "prompt finished");
        if c.spoilt {
            return Ok(Answer::retry(
                "the agent sent a message chunk that does not follow ACP v1; the reply would lack its text",
            ));
        }
        // Media alone is an answer too.
        let judged = if c.text.trim().is_empty() && !c.media.is_empty() {
            judge(stop, "(media)", cancelled_by_us)
        } else {
            judge(stop, &c.text, cancelled_by_us)
        };
        Ok(match judged {
            Ok(()) if c.media.is_empty() => Answer::Reply(c.text.clone()),
            Ok(()) => Answer::Media(c.text.clone(), c.media.clone()),
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
                let params = wire::load_session(sid, &self.opts.cwd);
                match tokio::time::timeout(
                    self.opts.timeout,
                    conn.request(wire::SESSION_LOAD, params),
                )
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
        let params = wire::new_session(&self.opts.cwd);
        let result =
            tokio::time::timeout(self.opts.timeout, conn.request(wire::SESSION_NEW, params))
                .await
                .map_err(|_| {
                    RpcError::Remote("session/new did not finish within --timeout".into())
                })??;
        let sid = wire::session_created(result).map_err(|e| RpcError::Remote(truncate(&e, 300)))?;
        let sid = sid.as_str();
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
        let init = wire::initialize();
        let result = match tokio::time::timeout(INIT_TIMEOUT, conn.request(wire::INITIALIZE, init))
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
        let agent = wire::initialized(result).map_err(|e| truncate(&e, 300))?;
        if agent.version != wire::VERSION {
            tracing::warn!(
                "the ACP agent {} speaks protocol version {}; smsgate speaks {}",
                self.program(),
                agent.version,
                wire::VERSION
            );
        }
        conn.load_session
            .store(agent.load_session, Ordering::Relaxed);
        conn.image.store(agent.image, Ordering::Relaxed);
        Ok((conn, child))
    }

    async fn on_request(&self, conn: &Conn, id: &Value, method: &str, params: Value) {
        if method != wire::REQUEST_PERMISSION {
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
        let ask = match wire::permission_ask(params.clone()) {
            Ok(ask) => ask,
            Err(e) => {
                self.garbage(&truncate(&e, 200));
                conn.respond(
                    id,
                    Err((-32602, "invalid session/request_permission params")),
                )
                .await;
                return;
            }
        };
        let title = ask.title.as_deref().unwrap_or("a tool call");
        if let Some(asker) = &self.asker {
            let (ask_title, detail) = permission_ask(&params);
            let session = ask.session.clone();
            let conversation = lock(&self.sessions)
                .iter()
                .find(|(_, e)| e.session == session)
                .map(|(c, _)| c.clone());
            let decision = asker
                .ask(&session, conversation.as_deref(), &ask_title, &detail)
                .await;
            let outcome = wire::permission_answer(option_for(&ask.options, &decision).as_deref());
            tracing::info!(
                "the ACP agent {} asked permission for {}; the approvers answered {decision}",
                self.program(),
                truncate(title, 120),
            );
            conn.respond(id, Ok(outcome)).await;
            return;
        }
        let (outcome, said) = match wire::choose_option(&ask.options, self.opts.allow_permissions) {
            Some(option) => {
                let allowed = ask.options.iter().any(|o| {
                    *o.option_id.0 == *option && o.kind == wire::PermissionOptionKind::AllowOnce
                });
                (
                    wire::permission_answer(Some(&option)),
                    if allowed {
                        "allowed once (--permissions allow)"
                    } else {
                        "rejected (--permissions deny)"
                    },
                )
            }
            None => (
                wire::permission_answer(None),
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

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

pub(crate) async fn read_images(turn: &Turn) -> Vec<(String, String)> {
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

pub(crate) async fn read_loop(
    bridge: Arc<AcpBridge>,
    conn: Arc<Conn>,
    stdout: tokio::process::ChildStdout,
) {
    // Bounded framing (see `crate::lines`): at most MAX_LINE bytes buffered.
    let mut lines = crate::lines::Lines::new(stdout, MAX_LINE);
    loop {
        match lines.next().await {
            Ok(None) | Err(_) => break,
            Ok(Some(crate::lines::Line::TooLong)) => {
                bridge.garbage(&format!("a line over {} MiB", MAX_LINE / 1024 / 1024));
            }
            Ok(Some(crate::lines::Line::NotUtf8)) => {
                bridge.garbage("a line that is not UTF-8");
            }
            Ok(Some(crate::lines::Line::Text(line))) => {
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
                    // An ask waits for a person (minutes): never in the read loop,
                    // whose updates and answers must keep flowing.
                    Incoming::Request { id, method, params } if bridge.asker.is_some() => {
                        let (bridge, conn) = (bridge.clone(), conn.clone());
                        tokio::spawn(async move {
                            bridge.on_request(&conn, &id, &method, params).await;
                        });
                    }
                    Incoming::Request { id, method, params } => {
                        bridge.on_request(&conn, &id, &method, params).await;
                    }
                    Incoming::Notification { method, params } => {
                        if method != wire::SESSION_UPDATE {
                            continue;
                        }
                        let chunk_of = wire::unreadable_chunk(&params).map(String::from);
                        let (sid, update) = match wire::update(params) {
                            Ok(u) => u,
                            Err(e) if chunk_of.is_some() => {
                                // A message chunk whose text we cannot read: the reply
                                // would lack it. Its prompt fails (see `turn`).
                                let sid = chunk_of.unwrap_or_default();
                                bridge.garbage(&format!(
                                    "an agent_message_chunk for session {} that does not follow ACP v1 ({})",
                                    truncate(&sid, 80),
                                    truncate(&wire::without_quoted(&e), 200)
                                ));
                                let sink = lock(&conn.sinks).get(&sid).map(|k| k.collect.clone());
                                if let Some(sink) = sink {
                                    let mut c = lock(&sink);
                                    c.updates += 1;
                                    c.spoilt = true;
                                }
                                continue;
                            }
                            Err(e) => {
                                // A kind of update this schema does not know (a newer
                                // agent) carries no text we could send: not an error.
                                tracing::debug!(
                                    "an ACP update was not read: {}",
                                    truncate(&e, 200)
                                );
                                continue;
                            }
                        };
                        // Updates go to the prompt running on their session only.
                        // Others (a session/load replaying history, an agent writing
                        // to a session with no prompt running) are never texted.
                        let sink = lock(&conn.sinks).get(&sid).map(|k| k.collect.clone());
                        match sink {
                            Some(sink) => {
                                let mut c = lock(&sink);
                                match wire::chunk_text(&update) {
                                    Some(t) => c.push(t),
                                    // Media blocks are read from the typed update's wire
                                    // form (what the schema kept of it).
                                    None => match serde_json::to_value(&update)
                                        .ok()
                                        .as_ref()
                                        .and_then(chunk_media)
                                    {
                                        Some((item, len)) => c.push_media(item, len),
                                        None => c.updates += 1,
                                    },
                                }
                            }
                            None => {
                                if conn.dropped_updates.allow_now().is_some() {
                                    tracing::debug!(
                                        "an update for ACP session {}, which has no prompt running; dropped",
                                        truncate(&sid, 80)
                                    );
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

pub(crate) async fn supervise(bridge: Arc<AcpBridge>, tx: watch::Sender<Option<Arc<Conn>>>) {
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
