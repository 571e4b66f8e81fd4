//! The ACP connection: JSON-RPC 2.0 framing (one message per line, bounded), request
//! ids and their waiting callers, the bounded writer to the agent's stdin, and where
//! `session/update`s go (only to the prompt running on their session).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Notify};

use super::{Trouble, STDIN_BUDGET};

// ---- pure decisions ---------------------------------------------------------------

/// One line from the agent, classified.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
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

pub(crate) fn classify(line: &str) -> Incoming {
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

/// The permits (bytes) a line of `len` bytes takes from [`STDIN_BUDGET`]: a line
/// larger than the whole budget is queued alone.
pub(crate) fn permits_for(len: usize) -> u32 {
    len.clamp(1, STDIN_BUDGET) as u32
}

// ---- the connection ---------------------------------------------------------------

#[derive(Debug)]
pub(crate) enum RpcError {
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
pub(crate) struct Collect {
    pub(crate) text: String,
    pub(crate) chars: usize,
    pub(crate) total_chars: usize,
    pub(crate) updates: u64,
    pub(crate) limit: usize,
    /// Set when a message chunk of this prompt could not be read (it does not follow
    /// ACP v1): the collected text is missing part of the answer, so it is not sent.
    pub(crate) spoilt: bool,
    /// Media items of the turn's message chunks (`{data, contentType, filename}`),
    /// at most [`crate::mms::MAX_ITEMS`] and [`MAX_MEDIA_BASE64`] bytes of base64.
    pub(crate) media: Vec<serde_json::Value>,
    pub(crate) media_base64: usize,
    /// Items left out over those bounds.
    pub(crate) media_dropped: usize,
}

/// The base64 a turn's media may hold: the reply line must fit the agent socket's cap.
pub(crate) const MAX_MEDIA_BASE64: usize = crate::agent::protocol::MAX_LINE - 512 * 1024;

impl Collect {
    /// Keeps a media item (see [`super::sessions::chunk_media`]) while it fits.
    pub(crate) fn push_media(&mut self, item: serde_json::Value, base64_len: usize) {
        self.updates += 1;
        let fits = self.media.len() < crate::mms::MAX_ITEMS
            && self.media_base64 + base64_len <= MAX_MEDIA_BASE64;
        if fits {
            self.media_base64 += base64_len;
            self.media.push(item);
        } else {
            self.media_dropped += 1;
        }
    }

    pub(crate) fn push(&mut self, s: &str) {
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
pub(crate) struct Sink {
    /// The JSON-RPC id of that `session/prompt`.
    pub(crate) prompt: u64,
    pub(crate) collect: Arc<Mutex<Collect>>,
}

/// A line for the agent's stdin and the room it holds in [`STDIN_BUDGET`] until
/// written.
pub(crate) type Queued = (String, tokio::sync::OwnedSemaphorePermit);

pub(crate) struct Conn {
    pub(crate) generation: u64,
    pub(crate) pid: Option<u32>,
    pub(crate) program: String,
    pub(crate) out: mpsc::UnboundedSender<Queued>,
    /// Bytes that may still be queued for the agent's stdin.
    pub(crate) room: Arc<tokio::sync::Semaphore>,
    /// How long a line waits for room.
    pub(crate) stall: Duration,
    /// Set when the agent was killed for not reading its stdin: its turns fail
    /// rather than being asked again of the next process.
    pub(crate) deaf: AtomicBool,
    pub(crate) pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>,
    pub(crate) next_id: AtomicU64,
    /// Session id → the prompt running on it.
    pub(crate) sinks: Mutex<HashMap<String, Sink>>,
    pub(crate) load_session: AtomicBool,
    pub(crate) image: AtomicBool,
    /// Sessions created or loaded by this process (others need `session/load`).
    pub(crate) open: Mutex<HashSet<String>>,
    pub(crate) kill: Notify,
    pub(crate) dropped_updates: crate::logging::LogLimiter,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a line for the agent, waiting for room at most [`Conn::stall`]; an
    /// agent that leaves it full that long is restarted.
    pub(crate) async fn send(&self, line: String) -> Result<(), RpcError> {
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
    pub(crate) fn try_send(&self, line: String) -> bool {
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
    pub(crate) fn deafened(&self) {
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

    pub(crate) async fn request(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.request_with(self.next_id(), method, params).await
    }

    pub(crate) async fn request_with(
        &self,
        id: u64,
        method: &str,
        params: Value,
    ) -> Result<Value, RpcError> {
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
    pub(crate) fn notify(&self, method: &str, params: Value) -> bool {
        let line = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.try_send(line.to_string())
    }

    /// Answers a request of the agent's. It waits for room: while the agent does not
    /// read its stdin, its further requests are not read either (backpressure), and
    /// after [`Conn::stall`] it is restarted.
    pub(crate) async fn respond(&self, id: &Value, result: Result<Value, (i64, &str)>) {
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
    pub(crate) fn close(&self) {
        lock(&self.pending).clear();
        self.room.close();
    }
}

/// Removes a prompt's sink when the turn ends, and cancels the prompt if the turn was
/// dropped before the agent finished (the gateway connection went away).
pub(crate) struct PromptGuard {
    pub(crate) conn: Arc<Conn>,
    pub(crate) session: String,
    pub(crate) prompt: u64,
    pub(crate) finished: bool,
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
            && !self.conn.notify(
                super::wire::SESSION_CANCEL,
                super::wire::cancel(&self.session),
            )
        {
            tracing::debug!("no room to send session/cancel to the ACP agent");
        }
    }
}
