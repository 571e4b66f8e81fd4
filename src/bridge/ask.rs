//! A bridge's asks to the approvers (CONTRACT §9): an `ask` line on the socket, and
//! the `answer` line that comes back for its `ref`. The socket session hands answers
//! in ([`Asker::answered`]) and forgets every waiting ask when the connection ends
//! (the daemon cancels them too): a waiter then hears `cancelled`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// One waiting ask: who waits, and the ACP session it belongs to (for cancelling).
struct Waiting {
    tx: oneshot::Sender<String>,
    session: String,
}

/// Asks one bridge may have waiting; more are `deny` at once without asking (the
/// daemon allows 5 pending per account anyway: a hostile agent's flood of permission
/// requests costs nothing beyond these).
pub(crate) const MAX_WAITING: usize = 16;

#[derive(Default)]
pub(crate) struct Asker {
    out: Mutex<Option<mpsc::UnboundedSender<String>>>,
    waiting: Mutex<HashMap<String, Waiting>>,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Asker {
    /// The socket is up: lines go to `out`.
    pub(crate) fn connected(&self, out: mpsc::UnboundedSender<String>) {
        *lock(&self.out) = Some(out);
    }

    /// The socket is gone: every waiting ask ends `cancelled` (so does the daemon's).
    pub(crate) fn disconnected(&self) {
        *lock(&self.out) = None;
        for (_, w) in lock(&self.waiting).drain() {
            let _ = w.tx.send("cancelled".into());
        }
    }

    /// An `answer` line from the gateway.
    pub(crate) fn answered(&self, v: &Value) {
        let Some(r) = v.get("ref").and_then(Value::as_str) else {
            return;
        };
        let decision = v
            .get("decision")
            .and_then(Value::as_str)
            .unwrap_or("deny")
            .to_string();
        if let Some(w) = lock(&self.waiting).remove(r) {
            let _ = w.tx.send(decision);
        }
    }

    /// Asks and waits for the decision (`allow_once`, `allow_always`, `deny`,
    /// `timeout`, `cancelled`); `cancelled` at once when the socket is down.
    pub(crate) async fn ask(
        &self,
        session: &str,
        conversation: Option<&str>,
        title: &str,
        detail: &str,
    ) -> String {
        let reference = format!("acp-{}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let (tx, rx) = oneshot::channel();
        let mut line = json!({"type": "ask", "ref": reference, "title": title, "detail": detail});
        if let Some(c) = conversation {
            line["conversation"] = json!(c);
        }
        {
            let out = lock(&self.out);
            let Some(out) = out.as_ref() else {
                return "cancelled".into();
            };
            if lock(&self.waiting).len() >= MAX_WAITING {
                return "deny".into();
            }
            lock(&self.waiting).insert(
                reference.clone(),
                Waiting {
                    tx,
                    session: session.to_string(),
                },
            );
            if out.send(format!("{line}\n")).is_err() {
                lock(&self.waiting).remove(&reference);
                return "cancelled".into();
            }
        }
        rx.await.unwrap_or_else(|_| "cancelled".into())
    }

    /// The prompt of `session` was cancelled: its asks are withdrawn (`cancel` lines;
    /// the daemon records `cancelled` and tells the approvers).
    pub(crate) fn cancel_session(&self, session: &str) {
        let gone: Vec<(String, Waiting)> = {
            let mut w = lock(&self.waiting);
            let refs: Vec<String> = w
                .iter()
                .filter(|(_, x)| x.session == session)
                .map(|(r, _)| r.clone())
                .collect();
            refs.into_iter()
                .filter_map(|r| w.remove(&r).map(|x| (r, x)))
                .collect()
        };
        let out = lock(&self.out).clone();
        for (r, w) in gone {
            if let Some(out) = &out {
                let _ = out.send(format!("{}\n", json!({"type": "cancel", "ref": r})));
            }
            let _ = w.tx.send("cancelled".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn asks_are_answered_cancelled_and_forgotten() {
        let asker = Arc::new(Asker::default());
        assert_eq!(
            asker.ask("s", None, "t", "d").await,
            "cancelled",
            "no socket"
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        asker.connected(tx);
        let a = asker.clone();
        let first = tokio::spawn(async move { a.ask("s1", Some("c-1"), "Run", "ls").await });
        let line: Value = serde_json::from_str(rx.recv().await.unwrap().trim()).unwrap();
        assert_eq!(line["type"], "ask");
        assert_eq!(line["conversation"], "c-1");
        asker.answered(&json!({"type": "answer", "ref": line["ref"], "decision": "allow_always"}));
        assert_eq!(first.await.unwrap(), "allow_always");

        let a = asker.clone();
        let second = tokio::spawn(async move { a.ask("s2", None, "Run", "ls").await });
        let line: Value = serde_json::from_str(rx.recv().await.unwrap().trim()).unwrap();
        asker.cancel_session("s1");
        asker.cancel_session("s2");
        assert_eq!(second.await.unwrap(), "cancelled");
        let cancel: Value = serde_json::from_str(rx.recv().await.unwrap().trim()).unwrap();
        assert_eq!(cancel, json!({"type": "cancel", "ref": line["ref"]}));

        // A flood: beyond MAX_WAITING, deny at once, nothing sent.
        let mut waiting = Vec::new();
        for _ in 0..MAX_WAITING {
            let a = asker.clone();
            waiting.push(tokio::spawn(async move { a.ask("f", None, "x", "").await }));
            rx.recv().await.unwrap();
        }
        assert_eq!(asker.ask("f", None, "x", "").await, "deny");
        assert!(rx.try_recv().is_err());
        asker.cancel_session("f");
        for w in waiting {
            assert_eq!(w.await.unwrap(), "cancelled");
        }
        while rx.try_recv().is_ok() {}

        let a = asker.clone();
        let third = tokio::spawn(async move { a.ask("s3", None, "Run", "ls").await });
        rx.recv().await.unwrap();
        asker.disconnected();
        assert_eq!(third.await.unwrap(), "cancelled");
    }
}
