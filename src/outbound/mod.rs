//! Texts going out: turning agent text into SMS parts on the durable outbound queue
//! ([`Outbox::plan`]), the in-memory queue of what waits to be sent (fed by the store
//! writer's after-commit hooks, loaded at start), who hears how a reply or send ended
//! ([`Outbox::part_done`]), and the sender task: [`sender`] (the loop and sending),
//! `lookup` (sends of unknown outcome), over `worker` (its handles and shared writes).

pub mod due;
pub mod held;
mod lookup;
pub mod sender;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

use crate::agent::hub::{ConnId, Hub};
use crate::agent::protocol::{self, Answering};
use crate::config::Config;
use crate::phone::E164;
use crate::store::{OutboundRecord, OutboundState, Purpose, Store, StoreError};

pub use due::DueIndex;
pub use sender::{backoff, MAX_ATTEMPTS};

const MAX_TRACKED_SIDS: usize = 100_000;

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

/// A reply or send refused before anything was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    /// A Twilio error code the refusal stands for (21610 for an opted-out number).
    pub code: Option<u32>,
    /// smsgate's own reason, the agent `error` line's string `code` (CONTRACT §9:
    /// `"not-allowed"` for a send `allowTo` refuses).
    pub reason: Option<&'static str>,
}

/// The `code` of an `error` line for a send `allowTo` refuses (CONTRACT §9).
pub const NOT_ALLOWED: &str = "not-allowed";

impl Refusal {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: None,
            reason: None,
        }
    }
}

struct Pending {
    waiter: Waiter,
    parts: u32,
    done: u32,
    sids: Vec<String>,
    segments: u32,
}

/// A planned text: its parts, ready to be written, and its group id.
pub struct Planned {
    pub group: u64,
    pub records: Vec<OutboundRecord>,
    pub account: String,
    pub to: E164,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    /// Twilio SID → the connection that sent it, for `status` lines.
    sid_owner: HashMap<String, ConnId>,
    /// The live sends (queued, held, of unknown outcome), indexed by when each falls
    /// due: the sender's in-memory queue.
    due: DueIndex,
}

pub struct Outbox {
    hub: Arc<Hub>,
    state: Mutex<State>,
    wake: Notify,
}

impl Outbox {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self {
            hub,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queued sends (in memory); sends waiting for a lookup do not count.
    pub fn queued_len(&self) -> usize {
        self.state().due.queued_len()
    }

    /// Held sends of `account` (in memory), for `outboundLimits.maxHeld`.
    pub fn held_len(&self, account: &str) -> usize {
        self.state().due.held_len(account)
    }

    /// The live parts of the reply or send `group` (in memory): (id, state).
    pub fn group_parts(&self, group: u64) -> Vec<(u64, OutboundState)> {
        self.state().due.group(group)
    }

    /// Replaces the in-memory queue with the store's queued records (at start, after
    /// a store reopen) and wakes the sender.
    pub fn load(&self, store: &Store) -> Result<(), StoreError> {
        let mut due = DueIndex::new();
        for r in store.live_outbound()? {
            due.upsert(r);
        }
        self.state().due = due;
        self.wake.notify_one();
        Ok(())
    }

    /// Records became durable with state `Queued` (after-commit hook).
    pub fn queued(&self, records: Vec<OutboundRecord>) {
        {
            let mut st = self.state();
            for r in records {
                if r.state == OutboundState::Queued {
                    st.due.upsert(r);
                }
            }
        }
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The sends due at `now` (copies, in id order) and when the next one falls due
    /// (see [`DueIndex::due`]; `lookup_due` gives a lookup's due time).
    pub(crate) fn due(
        &self,
        now: u64,
        lookup_due: impl Fn(&OutboundRecord) -> u64,
    ) -> (Vec<OutboundRecord>, Option<u64>) {
        let st = self.state();
        let (ids, next) = st.due.due(now, lookup_due);
        let records = ids
            .into_iter()
            .filter_map(|id| st.due.get(id).cloned())
            .collect();
        (records, next)
    }

    /// A send changed (written): kept if still pending, dropped if it ended.
    pub(crate) fn update(&self, rec: &OutboundRecord) {
        self.state().due.upsert(rec.clone());
    }

    pub(crate) fn forget(&self, id: u64) {
        self.state().due.remove(id);
    }

    /// Turns agent text into SMS parts for the outbound queue, and registers who hears
    /// the outcome once every part is sent, or the first fails. Nothing is written:
    /// the caller writes `records` (with the ack of the message it answers, for a
    /// reply) and calls [`Outbox::queued`] after the commit, or [`Outbox::abandon`].
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &self,
        config: &Config,
        store: &Store,
        account: Option<&str>,
        to: Option<&str>,
        text: &str,
        media_urls: Vec<String>,
        purpose: Purpose,
        waiter: Waiter,
    ) -> Result<Planned, Refusal> {
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
        let store_err =
            |e: crate::store::StoreError| Refusal::new(format!("cannot queue the message: {e}"));
        check_destination(config, store, account, &to, &purpose)?;
        let parts = plan_parts(text, account.text_chunk_limit, &media_urls)?;
        if store.is_opted_out(&account.id, &to).map_err(store_err)? {
            return Err(Refusal {
                message: "the recipient has opted out (replied STOP); nothing was sent".into(),
                code: Some(21610),
                reason: None,
            });
        }
        let now = crate::clock::now_ms();
        let group = store.next_id().map_err(store_err)?;
        let n = parts.len() as u32;
        let mut records: Vec<OutboundRecord> = Vec::with_capacity(parts.len());
        for (i, body) in parts.into_iter().enumerate() {
            let mut r = store
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
        Ok(Planned {
            group,
            records,
            account: account.id.clone(),
            to,
        })
    }

    /// The planned text was not written: nobody waits for it any more.
    pub fn abandon(&self, group: u64) {
        self.state().pending.remove(&group);
    }

    /// The sender reports how one part ended.
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
            let sids = p.sids.clone();
            if st.sid_owner.len() > MAX_TRACKED_SIDS {
                st.sid_owner.clear();
            }
            for sid in sids {
                st.sid_owner.insert(sid, conn);
            }
        }
        let Some(result) = finished else { return };
        let Some(p) = st.pending.remove(&group) else {
            return;
        };
        drop(st);
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
                self.hub.send_line(conn, line);
            }
            Waiter::Once(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Nobody => {}
        }
    }

    /// A delivery status callback moved a message we sent forward.
    pub fn status(&self, sid: &str, status: &str, error_code: Option<&str>) {
        let owner = self.state().sid_owner.get(sid).copied();
        if let Some(conn) = owner {
            self.hub
                .send_line(conn, protocol::status_line(sid, status, error_code));
        }
    }
}

/// Whether a send may go to `to` at all (never to one of the gateway's own numbers),
/// and, for the agent's own `send`, whether `allowTo` lets it (CONTRACT §9; the
/// decision is `access::allow_to::decide`, this only reads the one store fact it asks
/// for). Replies answer whoever texted; the operator's `message send` is not limited.
fn check_destination(
    config: &Config,
    store: &Store,
    account: &crate::config::Account,
    to: &E164,
    purpose: &Purpose,
) -> Result<(), Refusal> {
    use crate::access::allow_to;
    if let Some(own) = allow_to::own_number(config, to) {
        return Err(Refusal::new(allow_to::own_number_refusal(own)));
    }
    if !matches!(purpose, Purpose::Send { .. }) {
        return Ok(());
    }
    let approvers = allow_to::approvers(account);
    let known = allow_to::Known {
        allow_from: &account.allow_from,
        default_to: account.default_to.as_ref(),
        approvers: &approvers,
    };
    let allowed = match allow_to::decide(account.allow_to.as_ref(), &known, to) {
        allow_to::Verdict::Allowed => true,
        allow_to::Verdict::Refused => false,
        allow_to::Verdict::IfApproved => store
            .is_approved(&account.id, to)
            .map_err(|e| Refusal::new(format!("cannot check the recipient: {e}")))?,
    };
    if allowed {
        return Ok(());
    }
    Err(Refusal {
        message: allow_to::refusal(account, to),
        code: None,
        reason: Some(NOT_ALLOWED),
    })
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
