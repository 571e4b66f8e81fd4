//! Delivery to connected agents, and their replies and sends.
//!
//! Messages wait in the store's inbox until an agent acknowledges them. The hub hands
//! each to one connection: a sender is bound to one connection while any of its
//! messages is unacknowledged (so one sender's messages reach one agent at a time, in
//! order); a sender with nothing in flight goes to the connection with the fewest
//! unacknowledged messages. When a connection goes away, its unacknowledged messages
//! are delivered again, with the same ids, to the next one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

use super::protocol::{self, AgentLine, Answering};
use crate::daemon::App;
use crate::phone::E164;
use crate::store::{now_ms, OutboundRecord, Purpose};

pub type ConnId = u64;

/// Unacknowledged messages one connection may hold before the hub waits.
const MAX_IN_FLIGHT: usize = 64;
/// Lines buffered for a connection; an agent that lets this fill is not reading and is
/// dropped, so it cannot hold messages or memory.
const OUTBOX: usize = 1024;
const MAX_TRACKED_SIDS: usize = 100_000;

type SenderKey = (String, E164);

struct Conn {
    tx: mpsc::Sender<String>,
    in_flight: usize,
}

struct Flight {
    conn: ConnId,
    seq: u64,
    key: SenderKey,
}

/// Who hears how a reply or send ended.
pub enum Waiter {
    Agent(ConnId, Answering),
    Once(oneshot::Sender<GroupResult>),
    Nobody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupResult {
    Sent { sids: Vec<String>, segments: u32 },
    Failed { message: String, code: Option<u32> },
}

/// How one part (one SMS) of a reply or send ended.
pub enum PartOutcome {
    Sent { sid: Option<String>, segments: u32 },
    Failed { message: String, code: Option<u32> },
}

struct Pending {
    waiter: Waiter,
    parts: u32,
    done: u32,
    sids: Vec<String>,
    segments: u32,
}

#[derive(Default)]
struct State {
    conns: HashMap<ConnId, Conn>,
    in_flight: HashMap<String, Flight>,
    bound: HashMap<SenderKey, (ConnId, usize)>,
    pending: HashMap<u64, Pending>,
    /// Twilio SID → the connection that sent it, for `status` lines.
    sid_owner: HashMap<String, ConnId>,
}

/// A reply or send refused before anything was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub code: Option<u32>,
}

impl Refusal {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: None,
        }
    }
}

#[derive(Default)]
pub struct Hub {
    state: Mutex<State>,
    next_conn: AtomicU64,
}

impl Hub {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connections(&self) -> usize {
        self.state().conns.len()
    }

    pub fn connect(&self) -> (ConnId, mpsc::Receiver<String>) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(OUTBOX);
        self.state().conns.insert(id, Conn { tx, in_flight: 0 });
        tracing::info!(conn = id, "agent connected");
        (id, rx)
    }

    /// Forgets a connection; its unacknowledged messages go to the next agent.
    pub fn disconnect(&self, app: &App, conn: ConnId) {
        {
            let mut st = self.state();
            if st.conns.remove(&conn).is_none() {
                return;
            }
            let released = release(&mut st, conn);
            st.pending
                .retain(|_, p| !matches!(p.waiter, Waiter::Agent(c, _) if c == conn));
            tracing::info!(conn, redeliver = released, "agent disconnected");
        }
        self.pump(app);
    }

    fn emit(&self, st: &mut State, conn: ConnId, line: String) {
        let Some(c) = st.conns.get(&conn) else { return };
        if c.tx.try_send(line).is_err() {
            tracing::warn!(conn, "agent is not reading its socket; dropping the connection so its messages go to another agent");
            st.conns.remove(&conn);
            release(st, conn);
        }
    }

    pub fn send_line(&self, conn: ConnId, line: String) {
        let mut st = self.state();
        self.emit(&mut st, conn, line);
    }

    /// Delivers whatever can be delivered now.
    pub fn pump(&self, app: &App) {
        let mut guard = self.state();
        let st = &mut *guard;
        if st.conns.is_empty() {
            return;
        }
        // Messages already with an agent are skipped without decoding them.
        let in_flight: HashSet<u64> = st.in_flight.values().map(|f| f.seq).collect();
        let mut blocked: HashSet<SenderKey> = HashSet::new();
        let walked = app.store.walk_inbox(
            |seq| !in_flight.contains(&seq),
            |seq, msg| {
                if st.conns.values().all(|c| c.in_flight >= MAX_IN_FLIGHT) {
                    return false;
                }
                let key = (msg.account.clone(), msg.from.clone());
                if blocked.contains(&key) || msg.media_pending {
                    blocked.insert(key);
                    return true;
                }
                let target = match st.bound.get(&key) {
                    Some((c, _)) => Some(*c),
                    None => st
                        .conns
                        .iter()
                        .filter(|(_, c)| c.in_flight < MAX_IN_FLIGHT)
                        .min_by_key(|(id, c)| (c.in_flight, **id))
                        .map(|(id, _)| *id),
                };
                let Some(conn) = target else {
                    blocked.insert(key);
                    return true;
                };
                let Some(c) = st.conns.get_mut(&conn) else {
                    blocked.insert(key);
                    return true;
                };
                if c.in_flight >= MAX_IN_FLIGHT
                    || c.tx.try_send(protocol::message_line(&msg)).is_err()
                {
                    blocked.insert(key);
                    return true;
                }
                c.in_flight += 1;
                st.bound.entry(key.clone()).or_insert((conn, 0)).1 += 1;
                tracing::debug!(conn, id = %msg.id, "delivered to agent");
                st.in_flight
                    .insert(msg.id.clone(), Flight { conn, seq, key });
                true
            },
        );
        if let Err(e) = walked {
            tracing::error!("cannot read the agent inbox: {e}");
        }
    }

    /// Acknowledges `id` for `conn`; returns where replies to it go.
    fn ack(&self, app: &App, conn: ConnId, id: &str) -> Result<(String, E164), String> {
        let (key, acked) = {
            let mut st = self.state();
            let seq = match st.in_flight.get(id) {
                Some(f) if f.conn == conn => f.seq,
                Some(_) => return Err(format!("message {id} is being handled by another agent")),
                None => return Err(format!("message {id} is not waiting for an acknowledgement (unknown, or already acknowledged)")),
            };
            // The inbox entry goes before the in-flight mark, both under the lock:
            // otherwise a concurrent pump could see the message neither acknowledged
            // nor in flight, and deliver it again.
            let acked = app
                .store
                .ack_inbox(seq, now_ms())
                .map_err(|e| format!("cannot record the ack of {id}: {e}"))?;
            let Some(f) = st.in_flight.remove(id) else {
                return Err(format!("message {id} is not in flight"));
            };
            if let Some(c) = st.conns.get_mut(&conn) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
            unbind_one(&mut st, &f.key);
            (f.key, acked)
        };
        if let Some(msg) = acked {
            let paths: Vec<std::path::PathBuf> = msg
                .media
                .iter()
                .filter_map(|m| m.path.as_ref().map(Into::into))
                .collect();
            super::media::remove_files(&paths);
        }
        self.pump(app);
        Ok(key)
    }

    /// Handles one line from an agent.
    pub fn handle_line(&self, app: &App, conn: ConnId, line: &str) {
        let parsed = match protocol::parse(line) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(conn, "agent sent a bad line: {}", e.message);
                self.send_line(conn, protocol::line_error(&e));
                return;
            }
        };
        match parsed {
            AgentLine::Ack { id } => {
                if let Err(message) = self.ack(app, conn, &id) {
                    self.send_line(
                        conn,
                        protocol::error_line(&Answering::Id(id), &message, None),
                    );
                }
            }
            AgentLine::Reply {
                id,
                text,
                media_urls,
            } => {
                let answering = Answering::Id(id.clone());
                // A reply counts as the ack, whatever becomes of the reply itself.
                let route = match self.ack(app, conn, &id) {
                    Ok(key) => Some(key),
                    Err(_) => app
                        .store
                        .route(&id)
                        .ok()
                        .flatten()
                        .map(|r| (r.account, r.from)),
                };
                let Some((account, to)) = route else {
                    self.send_line(
                        conn,
                        protocol::error_line(
                            &answering,
                            &format!("unknown message id {id:?}"),
                            None,
                        ),
                    );
                    return;
                };
                let purpose = Purpose::Reply {
                    message_id: id.clone(),
                };
                if let Err(r) = self.queue_text(
                    app,
                    Some(&account),
                    Some(to.as_str()),
                    &text,
                    media_urls,
                    purpose,
                    Waiter::Agent(conn, answering.clone()),
                ) {
                    self.send_line(conn, protocol::error_line(&answering, &r.message, r.code));
                }
            }
            AgentLine::Send {
                to,
                account,
                text,
                reference,
                media_urls,
            } => {
                let answering = Answering::Ref(reference.clone());
                let purpose = Purpose::Send { reference };
                if let Err(r) = self.queue_text(
                    app,
                    account.as_deref(),
                    to.as_deref(),
                    &text,
                    media_urls,
                    purpose,
                    Waiter::Agent(conn, answering.clone()),
                ) {
                    self.send_line(conn, protocol::error_line(&answering, &r.message, r.code));
                }
            }
        }
    }

    /// Turns agent text into SMS parts on the durable outbound queue. `waiter` hears
    /// the outcome once every part is sent, or the first fails.
    #[allow(clippy::too_many_arguments)]
    pub fn queue_text(
        &self,
        app: &App,
        account: Option<&str>,
        to: Option<&str>,
        text: &str,
        media_urls: Vec<String>,
        purpose: Purpose,
        waiter: Waiter,
    ) -> Result<u64, Refusal> {
        let config = app.config();
        let account = config.sms.resolve_account(account).map_err(Refusal::new)?;
        let to = match to {
            Some(t) => E164::parse(t).map_err(|e| Refusal::new(e.to_string()))?,
            None => account.default_to.clone().ok_or_else(|| {
                Refusal::new(format!(
                    "no \"to\", and account {:?} has no defaultTo",
                    account.id
                ))
            })?,
        };
        let parts = plan_parts(text, account.text_chunk_limit, &media_urls)?;
        let store_err =
            |e: crate::store::StoreError| Refusal::new(format!("cannot queue the message: {e}"));
        if app
            .store
            .is_opted_out(&account.id, &to)
            .map_err(store_err)?
        {
            return Err(Refusal {
                message: "the recipient has opted out (replied STOP); nothing was sent".into(),
                code: Some(21610),
            });
        }
        let now = now_ms();
        let group = app
            .store
            .new_outbound(&account.id, to.clone(), String::new(), purpose.clone(), now)
            .map_err(store_err)?
            .id;
        let n = parts.len() as u32;
        let mut records: Vec<OutboundRecord> = Vec::with_capacity(parts.len());
        for (i, body) in parts.into_iter().enumerate() {
            let mut r = app
                .store
                .new_outbound(&account.id, to.clone(), body, purpose.clone(), now)
                .map_err(store_err)?;
            r.group = Some(group);
            r.part = i as u32;
            r.parts = n;
            if i == 0 {
                r.media_urls = media_urls.clone();
            }
            records.push(r);
        }
        self.state().pending.insert(
            group,
            Pending {
                waiter,
                parts: n,
                done: 0,
                sids: Vec::new(),
                segments: 0,
            },
        );
        if let Err(e) = app.store.enqueue(&records) {
            self.state().pending.remove(&group);
            return Err(store_err(e));
        }
        tracing::info!(account = %account.id, to = %to.redacted(), parts = n, "queued for sending");
        app.wake_outbound.notify_one();
        Ok(group)
    }

    /// The outbound sender reports how one part ended.
    pub fn part_done(&self, rec: &OutboundRecord, outcome: PartOutcome) {
        let mut st = self.state();
        let Some(group) = rec.group else { return };
        let Some(p) = st.pending.get_mut(&group) else {
            return;
        };
        let finished = match outcome {
            PartOutcome::Sent { sid, segments } => {
                p.done += 1;
                p.segments += segments;
                if let Some(sid) = sid {
                    p.sids.push(sid);
                }
                (p.done >= p.parts).then(|| GroupResult::Sent {
                    sids: p.sids.clone(),
                    segments: p.segments,
                })
            }
            PartOutcome::Failed { message, code } => Some(GroupResult::Failed { message, code }),
        };
        if let Waiter::Agent(conn, _) = p.waiter {
            if st.sid_owner.len() > MAX_TRACKED_SIDS {
                st.sid_owner.clear();
            }
            let sids: Vec<String> = st
                .pending
                .get(&group)
                .map(|p| p.sids.clone())
                .unwrap_or_default();
            for sid in sids {
                st.sid_owner.insert(sid, conn);
            }
        }
        let Some(result) = finished else { return };
        let Some(p) = st.pending.remove(&group) else {
            return;
        };
        match p.waiter {
            Waiter::Agent(conn, answering) => {
                let line = match &result {
                    GroupResult::Sent { sids, segments } => {
                        protocol::sent_line(&answering, sids, *segments)
                    }
                    GroupResult::Failed { message, code } => {
                        protocol::error_line(&answering, message, *code)
                    }
                };
                self.emit(&mut st, conn, line);
            }
            Waiter::Once(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Nobody => {}
        }
    }

    /// A delivery status callback moved a message we sent forward.
    pub fn status(&self, sid: &str, status: &str, error_code: Option<&str>) {
        let mut st = self.state();
        if let Some(conn) = st.sid_owner.get(sid).copied() {
            self.emit(
                &mut st,
                conn,
                protocol::status_line(sid, status, error_code),
            );
        }
    }

    /// Moves messages nobody acknowledged within `max_age_ms` to the dead letters.
    pub fn expire(&self, app: &App, max_age_ms: u64) {
        let now = now_ms();
        let in_flight: HashSet<String> = self.state().in_flight.keys().cloned().collect();
        let Ok(inbox) = app.store.inbox() else { return };
        for (seq, msg) in inbox {
            if now.saturating_sub(msg.received_at_ms) > max_age_ms && !in_flight.contains(&msg.id) {
                match app.store.dead_letter(seq, now) {
                    Ok(()) => {
                        tracing::warn!(id = %msg.id, account = %msg.account, "no agent acknowledged this message within gateway.agentQueueMaxAge; moved to the dead letters (`smsgate queue list`)")
                    }
                    Err(e) => tracing::error!("cannot move {} to the dead letters: {e}", msg.id),
                }
            }
        }
    }
}

fn unbind_one(st: &mut State, key: &SenderKey) {
    if let Some(b) = st.bound.get_mut(key) {
        b.1 = b.1.saturating_sub(1);
        if b.1 == 0 {
            st.bound.remove(key);
        }
    }
}

/// Releases a connection's in-flight messages; returns how many.
fn release(st: &mut State, conn: ConnId) -> usize {
    let ids: Vec<String> = st
        .in_flight
        .iter()
        .filter(|(_, f)| f.conn == conn)
        .map(|(id, _)| id.clone())
        .collect();
    for id in &ids {
        if let Some(f) = st.in_flight.remove(id) {
            unbind_one(st, &f.key);
        }
    }
    ids.len()
}

/// The SMS bodies a text becomes: flattened markdown, chunked; a media-only message is
/// one empty body.
pub fn plan_parts(text: &str, limit: usize, media_urls: &[String]) -> Result<Vec<String>, Refusal> {
    let parts = crate::text::prepare_sms(text, limit);
    if parts.is_empty() {
        if media_urls.is_empty() {
            return Err(Refusal::new("the text is empty; nothing to send"));
        }
        return Ok(vec![String::new()]);
    }
    Ok(parts)
}
