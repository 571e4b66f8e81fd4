//! Delivery to connected agents: connections and what each holds, nothing else.
//!
//! The hub keeps the undelivered messages in memory (`waiting`, by inbox sequence
//! number), fed by the store writer's after-commit hooks (so a message is only offered
//! once it is durable) and loaded from the store at start and after a store reopen; it
//! never walks the store's inbox. Each message goes to one connection: a sender is
//! bound to one connection while any of its messages is unacknowledged (one sender's
//! messages reach one agent at a time, in order); a sender with nothing in flight goes
//! to the connection with the fewest unacknowledged messages. When a connection goes
//! away, its unacknowledged messages are offered again, with the same ids, at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::protocol;
use crate::phone::E164;
use crate::store::AgentMessage;

pub(crate) type ConnId = u64;

/// Unacknowledged messages one connection may hold before the hub waits.
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// Lines buffered for a connection; an agent that lets this fill is not reading and is
/// dropped, so it cannot hold messages or memory.
const OUTBOX: usize = 1024;

type SenderKey = (String, E164);

struct Conn {
    tx: mpsc::Sender<String>,
    in_flight: usize,
    /// What the agent said it is (`hello`), else `socket`.
    kind: String,
    /// The peer's process, from the socket's credentials.
    pid: Option<u32>,
}

/// One connected agent, for `channels status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    pub kind: String,
    pub pid: Option<u32>,
    pub in_flight: usize,
    /// Milliseconds since the oldest message it holds was delivered to it.
    pub oldest_unacked_ms: Option<u64>,
}

struct Flight {
    conn: ConnId,
    seq: u64,
    key: SenderKey,
    msg: AgentMessage,
    /// An ack is being written: the message is not offered again if its connection
    /// goes away meanwhile (unless the write fails).
    acking: bool,
    /// Counted in `bound` (false once its connection went away while acking).
    bound: bool,
    /// When it was handed to the connection.
    delivered_at_ms: u64,
}

#[derive(Default)]
struct State {
    conns: HashMap<ConnId, Conn>,
    /// Durable, not yet delivered (or released), in arrival order.
    waiting: BTreeMap<u64, AgentMessage>,
    in_flight: HashMap<String, Flight>,
    bound: HashMap<SenderKey, (ConnId, usize)>,
    /// `inboundLimits.perSenderPerMinute` per account (absent: the default).
    per_minute: HashMap<String, u32>,
    /// When each sender's recent messages were delivered (the last minute's).
    delivered_at: HashMap<SenderKey, Vec<u64>>,
    /// The earliest time a message held back by the inbound limit may go.
    next_release: Option<u64>,
    /// Senders with a message in flight that the agent failed before: their later
    /// messages wait until it is handled, so a retry does not overtake them.
    retrying: HashSet<SenderKey>,
}

/// A message being acknowledged: what the ack write needs.
#[derive(Debug, Clone)]
pub struct Acking {
    pub seq: u64,
    pub msg: AgentMessage,
}

/// Queue depths the hub knows, for status and quiescence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubCounts {
    pub connections: usize,
    pub waiting: usize,
    pub in_flight: usize,
}

#[derive(Default)]
pub struct Hub {
    state: Mutex<State>,
    next_conn: AtomicU64,
    /// Woken when a held-back message may be due sooner than the pace task thought
    /// (a failed message's next delivery).
    pub release_changed: tokio::sync::Notify,
}

impl Hub {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connections(&self) -> usize {
        self.state().conns.len()
    }

    pub fn counts(&self) -> HubCounts {
        let st = self.state();
        HubCounts {
            connections: st.conns.len(),
            waiting: st.waiting.len(),
            in_flight: st.in_flight.len(),
        }
    }

    /// A new connection: its id, the lines to write to it, and a weak handle for the
    /// connection's own reader to answer its lines with backpressure (an agent cannot
    /// make us queue answers faster than it reads them; the weak handle does not keep
    /// the connection open once the hub drops it).
    pub fn connect(
        &self,
        pid: Option<u32>,
    ) -> (ConnId, mpsc::Receiver<String>, mpsc::WeakSender<String>) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(OUTBOX);
        let weak = tx.downgrade();
        self.state().conns.insert(
            id,
            Conn {
                tx,
                in_flight: 0,
                kind: "socket".into(),
                pid,
            },
        );
        tracing::info!(conn = id, pid, "agent connected");
        (id, rx, weak)
    }

    /// Sets each account's `inboundLimits.perSenderPerMinute` (at start, on reload).
    pub fn set_inbound_limits(&self, per_minute: HashMap<String, u32>) {
        self.state().per_minute = per_minute;
    }

    /// Forgets senders with no delivery in the last minute (the pace task, every few
    /// seconds).
    pub fn prune_rates(&self, now: u64) {
        self.state().delivered_at.retain(|_, times| {
            times.retain(|t| t + 60_000 > now);
            !times.is_empty()
        });
    }

    /// When the oldest message not yet delivered to an agent arrived (ms), if any.
    pub fn oldest_waiting_ms(&self) -> Option<u64> {
        self.state()
            .waiting
            .values()
            .map(|m| m.received_at_ms)
            .min()
    }

    /// When a message held back (by the inbound limit, or failed by the agent and
    /// waiting for its next delivery) may go next, if one is.
    pub fn next_release(&self) -> Option<u64> {
        self.state().next_release
    }

    /// Records what a connection said it is (`hello`).
    pub fn set_kind(&self, conn: ConnId, kind: String) {
        if let Some(c) = self.state().conns.get_mut(&conn) {
            tracing::info!(conn, kind = %kind, "agent introduced itself");
            c.kind = kind;
        }
    }

    /// The connected agents, oldest connection first.
    pub fn agents(&self, now_ms: u64) -> Vec<AgentInfo> {
        let st = self.state();
        let mut ids: Vec<&ConnId> = st.conns.keys().collect();
        ids.sort();
        ids.into_iter()
            .map(|id| {
                let c = &st.conns[id];
                let oldest = st
                    .in_flight
                    .values()
                    .filter(|f| f.conn == *id)
                    .map(|f| f.delivered_at_ms)
                    .min();
                AgentInfo {
                    kind: c.kind.clone(),
                    pid: c.pid,
                    in_flight: c.in_flight,
                    oldest_unacked_ms: oldest.map(|t| now_ms.saturating_sub(t)),
                }
            })
            .collect()
    }

    /// Forgets a connection; its unacknowledged messages go to the next agent now.
    pub fn disconnect(&self, conn: ConnId, why: &str) {
        let mut st = self.state();
        if st.conns.remove(&conn).is_none() {
            return;
        }
        let released = release(&mut st, conn);
        tracing::info!(conn, redeliver = released, "agent disconnected: {why}");
        pump(&mut st);
    }

    /// Sends a line to one connection (dropped if the connection is gone).
    /// The handle outbound tells how a reply or `send` of `conn` ended (and its
    /// delivery statuses): lines to that connection, through [`Hub::send_line`].
    pub fn author(
        self: &Arc<Self>,
        conn: ConnId,
        answering: protocol::Answering,
    ) -> Arc<dyn crate::outbound::Author> {
        Arc::new(ConnAuthor {
            hub: self.clone(),
            conn,
            answering,
        })
    }

    pub fn send_line(&self, conn: ConnId, line: String) {
        let mut st = self.state();
        emit(&mut st, conn, line);
    }

    /// Replaces what waits with the store's inbox (at start, after a store reopen),
    /// keeping what is in flight.
    pub fn load(&self, inbox: Vec<(u64, AgentMessage)>) {
        let mut st = self.state();
        let flying: HashSet<u64> = st.in_flight.values().map(|f| f.seq).collect();
        // Merged, not replaced: a message enqueued after the snapshot was read (a
        // webhook admitted right after a store reopen) must not drop out of memory.
        let fresh: Vec<(u64, AgentMessage)> = inbox
            .into_iter()
            .filter(|(seq, _)| !flying.contains(seq))
            .collect();
        st.waiting.extend(fresh);
        pump(&mut st);
    }

    /// A message became durable in the inbox: offer it.
    pub fn enqueue(&self, seq: u64, msg: AgentMessage) {
        let mut st = self.state();
        st.waiting.insert(seq, msg);
        pump(&mut st);
    }

    /// Delivers whatever can be delivered now.
    pub fn pump(&self) {
        pump(&mut self.state());
    }

    /// Starts acknowledging `id` for `conn`; the caller writes the ack and then calls
    /// [`Hub::acked`].
    pub fn begin_ack(&self, conn: ConnId, id: &str) -> Result<Acking, String> {
        let mut st = self.state();
        match st.in_flight.get_mut(id) {
            Some(f) if f.conn == conn && !f.acking => {
                f.acking = true;
                Ok(Acking {
                    seq: f.seq,
                    msg: f.msg.clone(),
                })
            }
            Some(f) if f.conn == conn => Err(format!("message {id} is already being acknowledged")),
            Some(_) => Err(format!("message {id} is being handled by another agent")),
            None => Err(format!("message {id} is not waiting for an acknowledgement (unknown, or already acknowledged)")),
        }
    }

    /// Whether `id` is in flight on a connection other than `conn`: such a message is
    /// that connection's to answer, and a reply from anyone else is refused (a hostile
    /// or confused agent must not answer, and so ack, another agent's message).
    pub fn held_elsewhere(&self, conn: ConnId, id: &str) -> bool {
        self.state()
            .in_flight
            .get(id)
            .is_some_and(|f| f.conn != conn)
    }

    /// The ack of `id` is durable (`ok`) or failed to be written (the message is
    /// offered again).
    pub fn acked(&self, id: &str, ok: bool) {
        let mut st = self.state();
        let Some(f) = take_flight(&mut st, id) else {
            return;
        };
        if !ok {
            st.waiting.insert(f.seq, f.msg);
        }
        pump(&mut st);
    }

    /// The agent's `fail` of `id` is durable: `Some(msg)` is back in the queue (with
    /// its failure count and the time it may go again), `None` went to the dead
    /// letters. The sender's later messages that were not delivered yet wait behind a
    /// retried one, so they still reach the agent in order.
    pub fn failed(&self, id: &str, retry: Option<AgentMessage>) {
        let mut st = self.state();
        let Some(f) = take_flight(&mut st, id) else {
            return;
        };
        if let Some(msg) = retry {
            st.waiting.insert(f.seq, msg);
        }
        pump(&mut st);
        drop(st);
        self.release_changed.notify_one();
    }

    /// Messages waiting for their media to be downloaded.
    pub fn media_pending(&self) -> Vec<(u64, AgentMessage)> {
        self.state()
            .waiting
            .iter()
            .filter(|(_, m)| m.media_pending)
            .map(|(s, m)| (*s, m.clone()))
            .collect()
    }

    /// Takes out of the queue every waiting message received before `cutoff_ms`, for
    /// the dead letters. In-flight messages stay with their agent.
    pub fn take_expired(&self, cutoff_ms: u64) -> Vec<(u64, AgentMessage)> {
        let mut st = self.state();
        let old: Vec<u64> = st
            .waiting
            .iter()
            .filter(|(_, m)| m.received_at_ms < cutoff_ms)
            .map(|(s, _)| *s)
            .collect();
        old.into_iter()
            .filter_map(|s| st.waiting.remove(&s).map(|m| (s, m)))
            .collect()
    }

    /// Drops a connection that is not reading its socket; its messages go to another
    /// agent at once.
    pub fn drop_not_reading(&self, conn: ConnId, unread_secs: u64) {
        let mut st = self.state();
        if st.conns.remove(&conn).is_none() {
            return;
        }
        let released = release(&mut st, conn);
        tracing::warn!(conn, redeliver = released, "agent disconnected: it has not read what was sent to it for {unread_secs} s (not reading its socket); its messages go to another agent");
        pump(&mut st);
    }
}

/// One connection as the author of a reply or `send` (see [`Hub::author`]).
struct ConnAuthor {
    hub: Arc<Hub>,
    conn: ConnId,
    answering: protocol::Answering,
}

impl crate::outbound::Author for ConnAuthor {
    fn finished(&self, result: &crate::outbound::GroupResult) {
        use crate::outbound::GroupResult;
        let line = match result {
            GroupResult::Sent { sids, segments } => {
                protocol::sent_line(&self.answering, sids, *segments)
            }
            GroupResult::Failed { message, code } => {
                protocol::error_line(&self.answering, message, *code)
            }
        };
        self.hub.send_line(self.conn, line);
    }

    fn status(&self, sid: &str, status: &str, error_code: Option<&str>) {
        self.hub
            .send_line(self.conn, protocol::status_line(sid, status, error_code));
    }
}

fn emit(st: &mut State, conn: ConnId, line: String) {
    let Some(c) = st.conns.get(&conn) else { return };
    if c.tx.try_send(line).is_err() {
        tracing::warn!(conn, "agent disconnected: it let {OUTBOX} lines pile up unread (not reading its socket); its messages go to another agent");
        st.conns.remove(&conn);
        release(st, conn);
        pump(st);
    }
}

fn pump(st: &mut State) {
    st.next_release = None;
    if st.conns.is_empty() || st.waiting.is_empty() {
        return;
    }
    let mut blocked: HashSet<SenderKey> = HashSet::new();
    let mut delivered: Vec<u64> = Vec::new();
    let mut dropped: Vec<ConnId> = Vec::new();
    let now = crate::clock::now_ms();
    let State {
        waiting,
        conns,
        bound,
        in_flight,
        per_minute,
        delivered_at,
        next_release,
        retrying,
        ..
    } = &mut *st;
    for (seq, msg) in waiting.iter() {
        if conns.values().all(|c| c.in_flight >= MAX_IN_FLIGHT) {
            break;
        }
        let key = (msg.account.clone(), msg.from.clone());
        if blocked.contains(&key) || msg.media_pending || retrying.contains(&key) {
            blocked.insert(key);
            continue;
        }
        // Failed by the agent and not due again yet: it waits, and so do its
        // sender's later messages (order), the pace task wakes the pump then. A
        // retry time further off than the longest backoff means the wall clock went
        // back: it is due now rather than held for as long as the clock jumped.
        let retry_at = msg.failures.retry_at_ms;
        if retry_at > now && retry_at - now <= crate::store::MAX_AGENT_RETRY_MS {
            let at = msg.failures.retry_at_ms;
            *next_release = Some(next_release.map_or(at, |n| n.min(at)));
            blocked.insert(key);
            continue;
        }
        // inboundLimits: a sender over the limit waits (stored; never dropped), and so
        // do their later messages, in order.
        let limit = per_minute
            .get(&msg.account)
            .copied()
            .unwrap_or(crate::limits::DEFAULT_INBOUND_PER_MINUTE);
        let recent = delivered_at.get(&key).map_or(&[][..], Vec::as_slice);
        if let Some(at) = crate::limits::inbound_release_at(recent, limit, now) {
            if !blocked.contains(&key) {
                tracing::debug!(id = %msg.id, "held back by inboundLimits.perSenderPerMinute");
            }
            *next_release = Some(next_release.map_or(at, |n| n.min(at)));
            blocked.insert(key);
            continue;
        }
        let target = match bound.get(&key) {
            Some((c, _)) => Some(*c),
            None => conns
                .iter()
                .filter(|(_, c)| c.in_flight < MAX_IN_FLIGHT)
                .min_by_key(|(id, c)| (c.in_flight, **id))
                .map(|(id, _)| *id),
        };
        let Some(conn) = target else {
            blocked.insert(key);
            continue;
        };
        let Some(c) = conns.get_mut(&conn) else {
            blocked.insert(key);
            continue;
        };
        if c.in_flight >= MAX_IN_FLIGHT {
            blocked.insert(key);
            continue;
        }
        if c.tx.try_send(protocol::message_line(msg)).is_err() {
            // Its line buffer is full: it is not reading.
            dropped.push(conn);
            blocked.insert(key);
            continue;
        }
        c.in_flight += 1;
        bound.entry(key.clone()).or_insert((conn, 0)).1 += 1;
        if msg.failures.count > 0 {
            // A retry goes alone: the sender's later messages follow once it is
            // handled (ack, reply, or another fail).
            retrying.insert(key.clone());
            blocked.insert(key.clone());
        }
        if limit > 0 {
            // Only this sender's minute is kept here; idle senders are forgotten by
            // `prune_rates`, so a pump never walks every sender.
            let times = delivered_at.entry(key.clone()).or_default();
            times.retain(|t| t + 60_000 > now);
            times.push(now);
        }
        tracing::debug!(conn, id = %msg.id, "delivered to agent");
        in_flight.insert(
            msg.id.clone(),
            Flight {
                conn,
                seq: *seq,
                key,
                msg: msg.clone(),
                acking: false,
                bound: true,
                delivered_at_ms: now,
            },
        );
        delivered.push(*seq);
    }
    for seq in delivered {
        st.waiting.remove(&seq);
    }
    if !dropped.is_empty() {
        for conn in dropped {
            if st.conns.remove(&conn).is_some() {
                tracing::warn!(conn, "agent disconnected: it let {OUTBOX} lines pile up unread (not reading its socket); its messages go to another agent");
                release(st, conn);
            }
        }
        pump(st);
    }
}

/// Takes `id` out of `in_flight` (an ack or a fail of it is durable): its connection
/// holds one message fewer, and the flight has [`landed`].
fn take_flight(st: &mut State, id: &str) -> Option<Flight> {
    let f = st.in_flight.remove(id)?;
    if let Some(c) = st.conns.get_mut(&f.conn) {
        c.in_flight = c.in_flight.saturating_sub(1);
    }
    landed(st, &f);
    Some(f)
}

/// A flight left `in_flight`: its sender is no longer bound by it, and a retried
/// message no longer holds the sender's later ones.
fn landed(st: &mut State, f: &Flight) {
    if f.bound {
        unbind_one(st, &f.key);
    }
    if f.msg.failures.count > 0 {
        st.retrying.remove(&f.key);
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

/// Releases a connection's in-flight messages back to `waiting` (those being acked
/// stay until their ack is written, no longer binding their sender to the dead
/// connection); returns how many.
fn release(st: &mut State, conn: ConnId) -> usize {
    let acking: Vec<String> = st
        .in_flight
        .iter()
        .filter(|(_, f)| f.conn == conn && f.acking && f.bound)
        .map(|(id, _)| id.clone())
        .collect();
    for id in &acking {
        if let Some(f) = st.in_flight.get_mut(id) {
            f.bound = false;
            let key = f.key.clone();
            unbind_one(st, &key);
        }
    }
    let ids: Vec<String> = st
        .in_flight
        .iter()
        .filter(|(_, f)| f.conn == conn && !f.acking)
        .map(|(id, _)| id.clone())
        .collect();
    for id in &ids {
        if let Some(f) = st.in_flight.remove(id) {
            landed(st, &f);
            st.waiting.insert(f.seq, f.msg);
        }
    }
    ids.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, from: &str) -> AgentMessage {
        AgentMessage {
            id: id.into(),
            account: "default".into(),
            from: E164::parse(from).expect("number"),
            to: "+15550001111".into(),
            text: "hi".into(),
            media: Vec::new(),
            received_at_ms: 1,
            media_pending: false,
            conversation: String::new(),
            failures: Default::default(),
            profile_name: None,
        }
    }

    fn ids(rx: &mut mpsc::Receiver<String>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(l) = rx.try_recv() {
            let v: serde_json::Value = serde_json::from_str(&l).expect("json line");
            out.push(v["id"].as_str().unwrap_or_default().to_string());
        }
        out
    }

    #[test]
    fn one_sender_one_agent_in_order_and_release_on_disconnect() {
        let hub = Hub::default();
        let (a, mut ra, _) = hub.connect(None);
        let (b, mut rb, _) = hub.connect(None);
        hub.enqueue(1, msg("m1", "+15550000001"));
        hub.enqueue(2, msg("m2", "+15550000001"));
        hub.enqueue(3, msg("m3", "+15550000002"));
        let (ga, gb) = (ids(&mut ra), ids(&mut rb));
        // The first sender is bound to one connection; the second goes to the other.
        assert_eq!(ga, ["m1", "m2"]);
        assert_eq!(gb, ["m3"]);
        assert_eq!(hub.counts().in_flight, 3);
        // An ack in progress is not redelivered when its connection goes.
        let acking = hub.begin_ack(a, "m1").expect("in flight on a");
        assert_eq!(acking.seq, 1);
        assert!(hub.begin_ack(b, "m2").is_err(), "another agent's message");
        hub.disconnect(a, "test");
        assert_eq!(
            ids(&mut rb),
            ["m2"],
            "m2 handed on at once, m1 is being acked"
        );
        hub.acked("m1", true);
        assert_eq!(
            hub.counts(),
            HubCounts {
                connections: 1,
                waiting: 0,
                in_flight: 2
            }
        );
    }

    #[test]
    fn a_sender_over_the_inbound_limit_waits_and_others_do_not() {
        let hub = Hub::default();
        hub.set_inbound_limits([("default".to_string(), 2)].into());
        let (_a, mut ra, _) = hub.connect(None);
        for i in 1..=3 {
            hub.enqueue(i, msg(&format!("SM{i}"), "+15550000001"));
        }
        hub.enqueue(4, msg("SM4", "+15550000002"));
        hub.pump();
        let mut got = Vec::new();
        while let Ok(line) = ra.try_recv() {
            got.push(line);
        }
        assert_eq!(
            got.len(),
            3,
            "two of the flooding sender's, and the other's: {got:?}"
        );
        assert!(got.iter().all(|l| !l.contains("SM3")));
        assert_eq!(hub.counts().waiting, 1, "stored, waiting, not dropped");
        assert!(hub.next_release().is_some());
        // No limit: everything goes.
        hub.set_inbound_limits([("default".to_string(), 0)].into());
        hub.pump();
        assert!(ra.try_recv().is_ok_and(|l| l.contains("SM3")));
    }

    #[test]
    fn a_failed_message_waits_for_its_time_and_holds_its_senders_later_ones() {
        let hub = Hub::default();
        let (a, mut ra, _) = hub.connect(None);
        hub.enqueue(1, msg("m1", "+15550000001"));
        assert_eq!(ids(&mut ra), ["m1"]);
        hub.begin_ack(a, "m1").expect("in flight");
        let mut again = msg("m1", "+15550000001");
        let later = crate::clock::now_ms() + 60_000;
        again.failures.count = 1;
        again.failures.retry_at_ms = later;
        hub.failed("m1", Some(again.clone()));
        hub.enqueue(2, msg("m2", "+15550000001"));
        hub.enqueue(3, msg("m3", "+15550000002"));
        assert_eq!(ids(&mut ra), ["m3"], "another sender is not held up");
        assert_eq!(hub.counts().waiting, 2, "m1 and, behind it, m2 wait");
        assert_eq!(hub.next_release(), Some(later));
        // Due: m1 goes first, then m2.
        hub.begin_ack(a, "m3").expect("in flight");
        hub.acked("m3", true);
        again.failures.retry_at_ms = 1;
        hub.load(vec![(1, again.clone())]);
        assert_eq!(ids(&mut ra), ["m1"], "a retry goes alone");
        // Failed again: both wait; due again: m1 alone again.
        hub.begin_ack(a, "m1").expect("in flight");
        again.failures.count = 2;
        hub.failed("m1", Some(again));
        assert_eq!(ids(&mut ra), ["m1"]);
        // A retry time beyond the longest backoff (the clock went back): due now.
        hub.begin_ack(a, "m1").expect("in flight");
        let mut skewed = msg("m1", "+15550000001");
        skewed.failures.count = 3;
        skewed.failures.retry_at_ms =
            crate::clock::now_ms() + crate::store::MAX_AGENT_RETRY_MS + 86_400_000;
        hub.failed("m1", Some(skewed));
        assert_eq!(ids(&mut ra), ["m1"]);
        // Dead-lettered: gone, the sender's binding is released and m2 follows.
        hub.begin_ack(a, "m1").expect("in flight");
        hub.failed("m1", None);
        assert_eq!(ids(&mut ra), ["m2"]);
        hub.begin_ack(a, "m2").expect("in flight");
        hub.acked("m2", true);
        assert_eq!(
            hub.counts(),
            HubCounts {
                connections: 1,
                waiting: 0,
                in_flight: 0
            }
        );
    }

    #[test]
    fn agents_list_kind_pid_in_flight_and_oldest() {
        let hub = Hub::default();
        let (a, mut ra, _) = hub.connect(Some(42));
        let (_b, _rb, _) = hub.connect(None);
        hub.set_kind(a, "acp".into());
        hub.enqueue(1, msg("SM1", "+15550000001"));
        hub.pump();
        assert!(ra.try_recv().is_ok(), "the first connection takes it");
        let list = hub.agents(u64::MAX / 2);
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[0].kind.as_str(), list[0].pid, list[0].in_flight),
            ("acp", Some(42), 1)
        );
        assert!(list[0].oldest_unacked_ms.is_some());
        assert_eq!(
            (list[1].kind.as_str(), list[1].pid, list[1].in_flight),
            ("socket", None, 0)
        );
        assert_eq!(list[1].oldest_unacked_ms, None);
    }

    #[test]
    fn failed_ack_offers_again_and_load_skips_in_flight() {
        let hub = Hub::default();
        let (a, mut ra, _) = hub.connect(None);
        hub.enqueue(5, msg("m5", "+15550000001"));
        assert_eq!(ids(&mut ra), ["m5"]);
        hub.begin_ack(a, "m5").expect("in flight");
        hub.acked("m5", false);
        assert_eq!(ids(&mut ra), ["m5"], "offered again after a failed write");
        hub.load(vec![
            (5, msg("m5", "+15550000001")),
            (6, msg("m6", "+15550000002")),
        ]);
        assert_eq!(
            ids(&mut ra),
            ["m6"],
            "load does not duplicate what is in flight"
        );
    }

    #[test]
    fn media_pending_blocks_its_sender_only_and_expiry_takes_waiting() {
        let hub = Hub::default();
        let mut m = msg("m1", "+15550000001");
        m.media_pending = true;
        hub.enqueue(1, m);
        hub.enqueue(2, msg("m2", "+15550000001"));
        hub.enqueue(3, msg("m3", "+15550000002"));
        let (_a, mut ra, _) = hub.connect(None);
        hub.pump();
        assert_eq!(ids(&mut ra), ["m3"]);
        assert_eq!(hub.media_pending().len(), 1);
        let expired = hub.take_expired(2);
        assert_eq!(
            expired.len(),
            2,
            "both waiting messages of the blocked sender"
        );
        assert_eq!(hub.counts().waiting, 0);
    }
}
