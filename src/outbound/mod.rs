//! Texts going out: turning agent text into SMS parts on the durable outbound queue
//! ([`Outbox::plan`]), the in-memory queue of what waits to be sent (fed by the store
//! writer's after-commit hooks, loaded at start), who hears how a reply or send ended
//! ([`Outbox::part_done`]), and the sender task: [`sender`] (the loop and sending),
//! `lookup` (sends of unknown outcome), over `worker` (its handles and shared writes).

pub(crate) mod due;
pub(crate) mod held;
mod lookup;
pub(crate) mod sender;
pub(crate) mod window;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

use crate::config::Config;
use crate::phone::E164;
use crate::store::{Hooks, OutboundRecord, OutboundState, Purpose, Store, StoreError, Writer};

pub(crate) use due::DueIndex;
pub(crate) use sender::backoff;

const MAX_TRACKED_SIDS: usize = 100_000;

/// Who hears how a reply or send ended.
pub enum Waiter {
    /// The agent connection that wrote it, by the handle the agent side gave.
    Agent(Arc<dyn Author>),
    Once(oneshot::Sender<GroupResult>),
    Nobody,
}

/// The agent side's handle to the connection that wrote a reply or `send`: outbound
/// tells it how the text ended and, later, the delivery statuses of what it sent. What
/// an agent connection is and what its lines look like stay on the agent side (outbound
/// sits below it: it imports nothing of `agent`).
pub trait Author: Send + Sync {
    /// Every part was sent, or one failed (once per reply or send).
    fn finished(&self, result: &GroupResult);
    /// A delivery status callback moved one of its messages forward.
    fn status(&self, sid: &str, status: &str, error_code: Option<&str>);
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
pub(crate) const NOT_ALLOWED: &str = "not-allowed";

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

/// Where a reply or send goes: `to` as written (`whatsapp:+1…` or a number; `None`:
/// the account's `defaultTo`), on `channel` when one is named (CONTRACT §12).
#[derive(Debug, Clone, Copy, Default)]
pub struct Destination<'a> {
    pub to: Option<&'a str>,
    pub channel: Option<crate::phone::Channel>,
}

impl<'a> Destination<'a> {
    /// An address as it is written (a reply's sender, the CLI's `--target`).
    pub fn address(to: &'a str) -> Self {
        Self {
            to: Some(to),
            channel: None,
        }
    }

    /// The address, or why there is none: a number on the named channel, or with its
    /// own `whatsapp:` prefix; an `sms` channel with a `whatsapp:` address is refused.
    pub fn resolve(&self, default_to: Option<&E164>) -> Result<Option<E164>, String> {
        use crate::phone::Channel;
        let Some(t) = self.to else {
            return Ok(default_to.map(|d| d.on(self.channel.unwrap_or(Channel::Sms))));
        };
        let addr = E164::parse_address(t).map_err(|e| e.to_string())?;
        match (self.channel, addr.channel()) {
            (Some(Channel::Sms), Channel::Whatsapp) => Err(
                "\"channel\" is \"sms\" but \"to\" is a whatsapp: address; drop one of them".into(),
            ),
            (Some(c), _) => Ok(Some(addr.on(c))),
            (None, _) => Ok(Some(addr)),
        }
    }
}

/// The most characters one WhatsApp message carries (Twilio's `Body` limit).
pub(crate) const WHATSAPP_BODY_MAX: usize = 1600;

/// A planned text: its parts, ready to be written, and its group id.
pub struct Planned {
    pub group: u64,
    pub records: Vec<OutboundRecord>,
    /// The media the first part's `media_urls` name (CONTRACT §10): the caller writes
    /// it in the same batch as `records` ([`crate::store::Store::put_media`]).
    pub media: Vec<crate::store::MediaBlob>,
    pub account: String,
    pub to: E164,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    /// Twilio SID → the connection that sent it, for `status` lines.
    sid_owner: HashMap<String, Arc<dyn Author>>,
    /// The live sends (queued, held, of unknown outcome), indexed by when each falls
    /// due: the sender's in-memory queue.
    due: DueIndex,
}

#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
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

    /// Replaces the in-memory queue with the store's live records (at start, after a
    /// store reopen, after `queue release`) and wakes the sender; see
    /// [`Outbox::reload_in`].
    pub async fn reload(self: &Arc<Self>, writer: &Writer) -> Result<(), StoreError> {
        let outbox = self.clone();
        writer
            .write(move |st, hooks| outbox.reload_in(st, hooks))
            .await
    }

    /// [`Outbox::reload`] as part of a write already on the writer thread.
    ///
    /// Why on the writer: every change to a live send updates the in-memory queue from
    /// its write's after-commit hook, in commit order. A snapshot read anywhere else
    /// and assigned later could be older than a hook that already ran: a send queued
    /// in between would vanish from memory (never sent, its agent never told; seen in
    /// CI as a lost `send` at start-up) and a send finished in between would come back
    /// and go out twice. Read here (with this round's pending changes) and assigned by
    /// this write's own hook, the snapshot sits at one point of that order.
    pub fn reload_in(self: &Arc<Self>, st: &Store, hooks: &mut Hooks) -> Result<(), StoreError> {
        let mut due = DueIndex::new();
        for r in st.live_outbound()? {
            due.upsert(r);
        }
        let outbox = self.clone();
        hooks.after(move || {
            outbox.state().due = due;
            outbox.wake.notify_one();
        });
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

    /// A send changed: kept if still pending, dropped if it ended. Called from the
    /// after-commit hook of the write that changed it (see [`Outbox::reload_in`]).
    pub(crate) fn update(&self, rec: OutboundRecord) {
        self.state().due.upsert(rec);
    }

    /// A send left the queue; from its write's after-commit hook, like `update`.
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
        to: Destination<'_>,
        text: &str,
        media_urls: Vec<String>,
        media: Vec<crate::mms::Item>,
        purpose: Purpose,
        waiter: Waiter,
    ) -> Result<Planned, Refusal> {
        let account = config.sms.resolve_account(account).map_err(Refusal::new)?;
        let to = to
            .resolve(account.default_to.as_ref())
            .map_err(Refusal::new)?
            .ok_or_else(|| {
                Refusal::new(format!(
                    "no \"to\", and account {:?} has no defaultTo",
                    account.id
                ))
            })?;
        if to.is_whatsapp() && account.whatsapp.is_none() {
            return Err(Refusal::new(format!(
                "account {:?} has no WhatsApp (set whatsapp.enabled and whatsapp.from in its config); nothing was sent",
                account.id
            )));
        }
        let store_err =
            |e: crate::store::StoreError| Refusal::new(format!("cannot queue the message: {e}"));
        check_destination(config, store, account, &to, &purpose)?;
        let now = crate::clock::now_ms();
        let (media_urls, mut media) = plan_media(account, media_urls, media, now)?;
        let parts = plan_parts(text, account, &to, &media_urls)?;
        if store.is_opted_out(&account.id, &to).map_err(store_err)? {
            return Err(Refusal {
                message: "the recipient has opted out (replied STOP); nothing was sent".into(),
                code: Some(21610),
                reason: None,
            });
        }
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
        if let Some(first) = records.first() {
            for m in &mut media {
                m.meta.send = first.id;
            }
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
            media,
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
        if let Waiter::Agent(author) = &p.waiter {
            let (author, sids) = (author.clone(), p.sids.clone());
            if st.sid_owner.len() > MAX_TRACKED_SIDS {
                st.sid_owner.clear();
            }
            for sid in sids {
                st.sid_owner.insert(sid, author.clone());
            }
        }
        let Some(result) = finished else { return };
        let Some(p) = st.pending.remove(&group) else {
            return;
        };
        drop(st);
        match p.waiter {
            Waiter::Agent(author) => author.finished(&result),
            Waiter::Once(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Nobody => {}
        }
    }

    /// A delivery status callback moved a message we sent forward.
    pub fn status(&self, sid: &str, status: &str, error_code: Option<&str>) {
        let owner = self.state().sid_owner.get(sid).cloned();
        if let Some(author) = owner {
            author.status(sid, status, error_code);
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

/// The media of a reply or send (CONTRACT §10): the items checked
/// ([`crate::mms::check`]: type from the bytes, `mediaMaxMb`, 10 in all with
/// `mediaUrls`), each given a 128-bit token and its URL on the account's public origin,
/// which must be https (Twilio fetches it). Returns every `MediaUrl` of the message and
/// the blobs to store (their `send` is set by the caller).
fn plan_media(
    account: &crate::config::Account,
    mut urls: Vec<String>,
    items: Vec<crate::mms::Item>,
    now: u64,
) -> Result<(Vec<String>, Vec<crate::store::MediaBlob>), Refusal> {
    if items.is_empty() {
        return Ok((urls, Vec::new()));
    }
    let accepted = crate::mms::check(items, urls.len(), account.media_max_bytes)
        .map_err(|e| Refusal::new(e.to_string()))?;
    let origin = match account.public_url() {
        Some(u) if u.parsed.scheme() == "https" => u.parsed.origin().ascii_serialization(),
        _ => {
            return Err(Refusal::new(format!(
                "media needs an https publicWebhookUrl (Twilio fetches each item from it); account {} has {}: set publicWebhookUrl to the https URL Twilio calls, or send mediaUrls you host yourself",
                account.id,
                account.public_url().map_or("none", |u| if u.parsed.scheme() == "http" { "an http one" } else { "none usable" })
            )))
        }
    };
    let mut blobs = Vec::with_capacity(accepted.len());
    for a in accepted {
        let token = new_token();
        urls.push(format!("{origin}/media/{token}/{}", a.filename));
        blobs.push(crate::store::MediaBlob {
            token,
            meta: crate::store::MediaMeta {
                content_type: a.content_type.to_string(),
                filename: a.filename,
                len: a.data.len() as u64,
                send: 0,
                created_ms: now,
                accepted_ms: None,
                sid: None,
            },
            data: a.data,
        });
    }
    Ok((urls, blobs))
}

/// 128 random bits from the OS, as 32 lowercase hex digits.
fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The SMS bodies a text becomes: flattened markdown, chunked; a media-only message is
/// one empty body.
pub(crate) fn plan_parts(
    text: &str,
    account: &crate::config::Account,
    to: &E164,
    media_urls: &[String],
) -> Result<Vec<String>, Refusal> {
    // WhatsApp: its own formatting, and Twilio's whole `Body` (CONTRACT §12).
    let parts = if to.is_whatsapp() {
        crate::text::prepare_whatsapp(text, WHATSAPP_BODY_MAX)
    } else {
        crate::text::prepare_sms(text, account.text_chunk_limit)
    };
    if parts.is_empty() {
        if media_urls.is_empty() {
            return Err(Refusal::new("the text is empty; nothing to send"));
        }
        return Ok(vec![String::new()]);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-memory queue equals the store's live sends however reloads interleave
    /// with sends being queued and finished (the race CI found: an agent's `send`
    /// written while the sender loaded the queue at start-up vanished from memory).
    /// Every interleaving must end equal, so it cannot fail by luck once right. (The old
    /// window, a snapshot read off the writer and assigned after another write's hook,
    /// was microseconds wide: this did not catch it in three runs; CI under load did.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reloads_racing_queued_and_finished_sends_leave_memory_equal_to_the_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(Store::open(&dir.path().join("state")).expect("store opens"));
        let writer = Writer::start(store.clone());
        let outbox = Arc::new(Outbox::new());
        let mut tasks: Vec<tokio::task::JoinHandle<Result<(), StoreError>>> = Vec::new();
        // Reloads back to back while sends are queued and finished.
        let reloading = {
            let (writer, outbox) = (writer.clone(), outbox.clone());
            tokio::spawn(async move {
                for _ in 0..60 {
                    outbox.reload(&writer).await?;
                }
                Ok::<(), StoreError>(())
            })
        };
        for i in 0..600u64 {
            let (store, writer, outbox) = (store.clone(), writer.clone(), outbox.clone());
            // One recipient each: the due-index offers one send per recipient at a time.
            let to = E164::parse(&format!("+1555765{i:04}")).expect("number");
            tasks.push(tokio::spawn(async move {
                let rec = store
                    .new_outbound("default", to, format!("t{i}"), Purpose::Cli, i)
                    .expect("record");
                let (o, queued) = (outbox.clone(), vec![rec.clone()]);
                writer
                    .write(move |st, hooks| {
                        st.enqueue(&queued)?;
                        hooks.after(move || o.queued(queued));
                        Ok(())
                    })
                    .await?;
                if i % 3 == 0 {
                    // It went out: leaves the store's queue and (by its hook) memory.
                    let o = outbox.clone();
                    writer
                        .write(move |st, hooks| {
                            st.complete_send(&rec, 1, i, None, false)?;
                            hooks.after(move || o.forget(rec.id));
                            Ok(())
                        })
                        .await?;
                }
                Ok(())
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("write");
        }
        reloading.await.expect("task").expect("reload");
        let stored: Vec<u64> = store
            .live_outbound()
            .expect("read")
            .iter()
            .map(|r| r.id)
            .collect();
        let in_memory: Vec<u64> = outbox
            .due(u64::MAX, |_| u64::MAX)
            .0
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(stored.len(), 400, "600 queued, 200 of them finished");
        assert_eq!(in_memory, stored);
    }
}
