//! Durable state in sled: the inbound spool, processed SIDs, pairing requests,
//! approved senders, opt-outs, the agent inbox and the outbound queue.
//!
//! Every method is synchronous and short (sled keeps its tree in memory and appends to
//! a log); durability comes from [`Store::flush`], which the daemon batches across
//! concurrent webhooks with [`GroupCommit`]. Changes that belong together are one sled
//! transaction, so a `kill -9` leaves either all or none of them.

pub mod records;

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use tokio::sync::{mpsc, oneshot};

use crate::access::pairing::{normalize_code, PairingRequest};
use crate::phone::E164;
pub use records::*;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is locked by another process (is `smsgate gateway` running as another user, or another copy?)")]
    Locked { path: PathBuf },
    #[error(
        "the store at {path} belongs to uid {owner} ({name}), but smsgate runs as uid {me}; {fix}"
    )]
    WrongOwner {
        path: PathBuf,
        owner: u32,
        name: String,
        me: u32,
        /// What to do about it: [`ownership_fix`].
        fix: String,
    },
    #[error("cannot open the store at {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("the store at {path} is corrupt: {message}; move it aside and restart to begin with an empty store")]
    Corrupt { path: PathBuf, message: String },
    #[error("store write failed: {0}")]
    Io(String),
    #[error("stored record is unreadable: {0}")]
    Decode(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => e.into(),
        }
    }
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serialising our own plain records to JSON cannot fail (no maps with non-string
    // keys, no custom serialisers that error): documented invariant.
    #[allow(clippy::expect_used)]
    serde_json::to_vec(v).expect("records serialise")
}

fn dec<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode(e.to_string()))
}

fn key2(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn prefix(a: &str) -> Vec<u8> {
    let mut k = a.as_bytes().to_vec();
    k.push(0);
    k
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Outcome of a delivery status callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusUpdate {
    Duplicate,
    /// Older than what is recorded (callbacks arrive out of order): not applied.
    Stale,
    Applied,
}

/// Outcome of offering a webhook to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Duplicate,
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    /// Inbound webhooks admitted but not yet processed, by sequence number.
    spool: sled::Tree,
    /// Processed and admitted SIDs (and status-callback keys) → admission time.
    seen: sled::Tree,
    rejected: sled::Tree,
    pairing: sled::Tree,
    approved: sled::Tree,
    optout: sled::Tree,
    /// Messages for the agent, by sequence number.
    inbox: sled::Tree,
    outbound: sled::Tree,
    /// Latest delivery status per outbound Twilio SID.
    status: sled::Tree,
    /// Message id → where replies go, after the body is gone.
    routes: sled::Tree,
    /// Dead letters by message id.
    dead: sled::Tree,
    /// When pairing texts went out: `account \0 number \0 time` → empty.
    texted: sled::Tree,
}

impl Store {
    /// Opens (creating if needed, mode 0700) the store in `state_dir`. Refuses a state
    /// dir owned by another user, so root never leaves files the service cannot open.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join("db");
        let open_err = |message: String| StoreError::Open {
            path: state_dir.to_path_buf(),
            message,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| open_err(format!("cannot create the state directory: {e}")))?;
        let meta = std::fs::metadata(state_dir).map_err(|e| open_err(e.to_string()))?;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(wrong_owner(state_dir, meta.uid()));
        }
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(16 * 1024 * 1024)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    StoreError::Locked { path: path.clone() }
                }
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                    wrong_owner(state_dir, meta.uid())
                }
                sled::Error::Corruption { .. }
                | sled::Error::ReportableBug(_)
                | sled::Error::Unsupported(_) => StoreError::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                },
                other => open_err(other.to_string()),
            })?;
        let tree = |name: &str| db.open_tree(name).map_err(StoreError::from);
        Ok(Self {
            spool: tree("spool")?,
            seen: tree("seen")?,
            rejected: tree("rejected")?,
            pairing: tree("pairing")?,
            approved: tree("approved")?,
            optout: tree("optout")?,
            inbox: tree("inbox")?,
            outbound: tree("outbound")?,
            status: tree("status")?,
            routes: tree("routes")?,
            dead: tree("dead")?,
            texted: tree("texted")?,
            db,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes every write so far durable (fsync).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(StoreError::from)
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        self.db.generate_id().map_err(StoreError::from)
    }

    // ---- admission -------------------------------------------------------------

    /// Records `record` in the spool unless its SID was seen before, atomically: two
    /// concurrent deliveries of one SID admit it once.
    pub fn admit(&self, record: &InboundRecord) -> Result<Admission, StoreError> {
        let seq = self.next_id()?.to_be_bytes();
        let value = enc(record);
        let ts = record.received_at_ms.to_be_bytes();
        let sid = record.sid.as_bytes();
        let r = (&self.seen, &self.spool).transaction(|(seen, spool)| {
            if seen.get(sid)?.is_some() {
                return Ok(Admission::Duplicate);
            }
            seen.insert(sid, &ts)?;
            spool.insert(&seq, value.as_slice())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(Admission::Admitted)
        })?;
        Ok(r)
    }

    /// Keeps a webhook that must never be processed, deduplicated like admissions.
    pub fn admit_rejected(&self, record: &RejectedRecord) -> Result<Admission, StoreError> {
        let seq = self.next_id()?.to_be_bytes();
        let value = enc(record);
        let ts = record.received_at_ms.to_be_bytes();
        let sid = record.sid.as_bytes();
        let r = (&self.seen, &self.rejected).transaction(|(seen, rejected)| {
            if seen.get(sid)?.is_some() {
                return Ok(Admission::Duplicate);
            }
            seen.insert(sid, &ts)?;
            rejected.insert(&seq, value.as_slice())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(Admission::Admitted)
        })?;
        Ok(r)
    }

    pub fn rejected(&self) -> Result<Vec<RejectedRecord>, StoreError> {
        self.rejected.iter().values().map(|v| dec(&v?)).collect()
    }

    /// Records a delivery status callback, deduplicated on (SID, status). A terminal
    /// status is never replaced by a later non-terminal one (callbacks come out of
    /// order). Returns whether it was new.
    pub fn record_status(
        &self,
        sid: &str,
        status: &str,
        error_code: Option<&str>,
        now: u64,
    ) -> Result<StatusUpdate, StoreError> {
        let dedupe = key2(&format!("status:{sid}"), status);
        let ts = now.to_be_bytes();
        let entry =
            enc(&serde_json::json!({ "status": status, "errorCode": error_code, "at": now }));
        let r = (&self.seen, &self.status).transaction(|(seen, st)| {
            if seen.get(&dedupe)?.is_some() {
                return Ok(StatusUpdate::Duplicate);
            }
            seen.insert(dedupe.as_slice(), &ts)?;
            let current: Option<String> = st
                .get(sid.as_bytes())?
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
                .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(String::from));
            if crate::twilio::status_may_replace(current.as_deref(), status) {
                st.insert(sid.as_bytes(), entry.as_slice())?;
                return Ok(StatusUpdate::Applied);
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(StatusUpdate::Stale)
        })?;
        Ok(r)
    }

    pub fn delivery_status(&self, sid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .status
            .get(sid.as_bytes())?
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
            .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(String::from)))
    }

    /// Forgets dedupe keys older than `max_age_ms` (at least a day is kept: Twilio
    /// retries within minutes, but operators replay from the console later).
    pub fn prune_seen(&self, now: u64, max_age_ms: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.seen.iter() {
            let (k, v) = item?;
            let at = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            if now.saturating_sub(at) > max_age_ms {
                self.seen.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    // ---- the spool ---------------------------------------------------------------

    /// The oldest unprocessed inbound webhook.
    pub fn next_spooled(&self) -> Result<Option<(sled::IVec, InboundRecord)>, StoreError> {
        match self.spool.first()? {
            Some((k, v)) => Ok(Some((k, dec(&v)?))),
            None => Ok(None),
        }
    }

    pub fn spool_len(&self) -> usize {
        self.spool.len()
    }

    /// Applies a processing outcome: removes the spool entry and makes the listed
    /// changes, all in one transaction.
    pub fn complete(&self, spool_key: &[u8], effects: &Effects) -> Result<(), StoreError> {
        let inbox_key = match effects.forward {
            Some(_) => Some(self.next_id()?.to_be_bytes()),
            None => None,
        };
        let outbound: Vec<(u64, Vec<u8>)> = effects
            .outbound
            .iter()
            .map(|o| Ok((o.id, enc(o))))
            .collect::<Result<_, StoreError>>()?;
        let texted_key = effects.texted.as_ref().map(|(account, number)| {
            let mut k = key2(account, number.as_str());
            k.push(0);
            k.extend_from_slice(&effects.now.to_be_bytes());
            k
        });
        (
            &self.spool,
            &self.inbox,
            &self.pairing,
            &self.optout,
            &self.outbound,
            &self.texted,
        )
            .transaction(|(spool, inbox, pairing, optout, out, texted)| {
                spool.remove(spool_key)?;
                if let Some(k) = &texted_key {
                    texted.insert(k.as_slice(), &[])?;
                }
                if let (Some(msg), Some(k)) = (&effects.forward, inbox_key) {
                    inbox.insert(&k, enc(msg))?;
                }
                for r in &effects.expire_pairing {
                    pairing.remove(key2(&r.account, &r.code))?;
                }
                if let Some(r) = &effects.new_pairing {
                    pairing.insert(key2(&r.account, &r.code), enc(r))?;
                }
                match &effects.opt {
                    Some((account, number, true)) => {
                        optout
                            .insert(key2(account, number.as_str()), &effects.now.to_be_bytes())?;
                    }
                    Some((account, number, false)) => {
                        optout.remove(key2(account, number.as_str()))?;
                    }
                    None => {}
                }
                for (id, v) in &outbound {
                    out.insert(&id.to_be_bytes(), v.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })?;
        Ok(())
    }

    // ---- access state --------------------------------------------------------------

    pub fn is_approved(&self, account: &str, number: &E164) -> Result<bool, StoreError> {
        Ok(self.approved.contains_key(key2(account, number.as_str()))?)
    }

    pub fn is_opted_out(&self, account: &str, number: &E164) -> Result<bool, StoreError> {
        Ok(self.optout.contains_key(key2(account, number.as_str()))?)
    }

    pub fn set_opted_out(&self, account: &str, number: &E164, now: u64) -> Result<(), StoreError> {
        self.optout
            .insert(key2(account, number.as_str()), &now.to_be_bytes())?;
        Ok(())
    }

    /// Every pairing request of an account, expired ones included.
    pub fn pairing_requests(&self, account: &str) -> Result<Vec<PairingRequest>, StoreError> {
        self.pairing
            .scan_prefix(prefix(account))
            .values()
            .map(|v| dec(&v?))
            .collect()
    }

    /// Unexpired requests of every account, oldest first.
    pub fn pending_pairings(&self, now: u64) -> Result<Vec<PairingRequest>, StoreError> {
        let mut all: Vec<PairingRequest> = self
            .pairing
            .iter()
            .values()
            .map(|v| dec(&v?))
            .collect::<Result<_, _>>()?;
        all.retain(|r| !r.is_expired(now));
        all.sort_by_key(|r| r.created_at_ms);
        Ok(all)
    }

    fn find_pairing(&self, code: &str, now: u64) -> Result<Option<PairingRequest>, StoreError> {
        let code = normalize_code(code);
        Ok(self
            .pending_pairings(now)?
            .into_iter()
            .find(|r| r.code == code))
    }

    /// Approves a pending code: the sender joins the account's approved list and, unless
    /// opted out, `notice` is queued to them. One transaction.
    pub fn approve_pairing(
        &self,
        code: &str,
        now: u64,
        notice: &str,
    ) -> Result<Option<PairingRequest>, StoreError> {
        let Some(req) = self.find_pairing(code, now)? else {
            return Ok(None);
        };
        let approved = ApprovedSender {
            number: req.sender.clone(),
            account: req.account.clone(),
            approved_at_ms: now,
        };
        let opted_out = self.is_opted_out(&req.account, &req.sender)?;
        let out = OutboundRecord::new(
            self.next_id()?,
            &req.account,
            req.sender.clone(),
            notice.to_string(),
            Purpose::PairingApproved,
            now,
        );
        let key = key2(&req.account, &req.code);
        let akey = key2(&req.account, req.sender.as_str());
        (&self.pairing, &self.approved, &self.outbound).transaction(
            |(pairing, appr, outbound)| {
                pairing.remove(key.as_slice())?;
                appr.insert(akey.as_slice(), enc(&approved))?;
                if !opted_out {
                    outbound.insert(&out.id.to_be_bytes(), enc(&out))?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            },
        )?;
        Ok(Some(req))
    }

    pub fn reject_pairing(
        &self,
        code: &str,
        now: u64,
    ) -> Result<Option<PairingRequest>, StoreError> {
        let Some(req) = self.find_pairing(code, now)? else {
            return Ok(None);
        };
        self.pairing.remove(key2(&req.account, &req.code))?;
        Ok(Some(req))
    }

    pub fn approved_senders(
        &self,
        account: Option<&str>,
    ) -> Result<Vec<ApprovedSender>, StoreError> {
        let iter = match account {
            Some(a) => self.approved.scan_prefix(prefix(a)),
            None => self.approved.iter(),
        };
        iter.values().map(|v| dec(&v?)).collect()
    }

    pub fn approve_sender(&self, account: &str, number: &E164, now: u64) -> Result<(), StoreError> {
        let rec = ApprovedSender {
            number: number.clone(),
            account: account.to_string(),
            approved_at_ms: now,
        };
        self.approved
            .insert(key2(account, number.as_str()), enc(&rec))?;
        Ok(())
    }

    pub fn revoke_sender(&self, account: &str, number: &E164) -> Result<bool, StoreError> {
        Ok(self
            .approved
            .remove(key2(account, number.as_str()))?
            .is_some())
    }

    // ---- the agent inbox -------------------------------------------------------------

    pub fn inbox(&self) -> Result<Vec<(u64, AgentMessage)>, StoreError> {
        self.inbox
            .iter()
            .map(|item| {
                let (k, v) = item?;
                let seq = k.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
                Ok((seq, dec(&v)?))
            })
            .collect()
    }

    /// Walks the inbox in order, decoding only the entries `wanted` accepts (decoding
    /// is most of the cost); `visit` returns false to stop.
    pub fn walk_inbox(
        &self,
        wanted: impl Fn(u64) -> bool,
        mut visit: impl FnMut(u64, AgentMessage) -> bool,
    ) -> Result<(), StoreError> {
        for item in self.inbox.iter() {
            let (k, v) = item?;
            let seq = k.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            if wanted(seq) && !visit(seq, dec(&v)?) {
                break;
            }
        }
        Ok(())
    }

    pub fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    pub fn put_inbox(&self, seq: u64, msg: &AgentMessage) -> Result<(), StoreError> {
        self.inbox.insert(seq.to_be_bytes(), enc(msg))?;
        Ok(())
    }

    /// Acknowledges a message: its body goes, a route for late replies stays.
    pub fn ack_inbox(&self, seq: u64, now: u64) -> Result<Option<AgentMessage>, StoreError> {
        let Some(v) = self.inbox.get(seq.to_be_bytes())? else {
            return Ok(None);
        };
        let msg: AgentMessage = dec(&v)?;
        let route = enc(&Route {
            account: msg.account.clone(),
            from: msg.from.clone(),
            at_ms: now,
        });
        (&self.inbox, &self.routes).transaction(|(inbox, routes)| {
            inbox.remove(&seq.to_be_bytes())?;
            routes.insert(msg.id.as_bytes(), route.as_slice())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(Some(msg))
    }

    pub fn route(&self, message_id: &str) -> Result<Option<Route>, StoreError> {
        match self.routes.get(message_id.as_bytes())? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    /// Forgets reply routes older than `max_age_ms`.
    pub fn prune_routes(&self, now: u64, max_age_ms: u64) -> Result<(), StoreError> {
        for item in self.routes.iter() {
            let (k, v) = item?;
            let r: Route = dec(&v)?;
            if now.saturating_sub(r.at_ms) > max_age_ms {
                self.routes.remove(k)?;
            }
        }
        Ok(())
    }

    /// Moves an unacknowledged message to the dead letters.
    pub fn dead_letter(&self, seq: u64, now: u64) -> Result<(), StoreError> {
        let Some(v) = self.inbox.get(seq.to_be_bytes())? else {
            return Ok(());
        };
        let msg: AgentMessage = dec(&v)?;
        let dead = enc(&DeadLetter {
            message: msg.clone(),
            dead_at_ms: now,
        });
        (&self.inbox, &self.dead).transaction(|(inbox, d)| {
            inbox.remove(&seq.to_be_bytes())?;
            d.insert(msg.id.as_bytes(), dead.as_slice())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead.iter().values().map(|v| dec(&v?)).collect()
    }

    /// Puts a dead letter back at the end of the inbox.
    pub fn requeue_dead(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        let Some(v) = self.dead.get(id.as_bytes())? else {
            return Ok(false);
        };
        let mut d: DeadLetter = dec(&v)?;
        d.message.received_at_ms = now;
        let seq = self.next_id()?;
        let msg = enc(&d.message);
        (&self.inbox, &self.dead).transaction(|(inbox, dead)| {
            dead.remove(id.as_bytes())?;
            inbox.insert(&seq.to_be_bytes(), msg.as_slice())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(true)
    }

    pub fn purge_dead(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        match self.dead.remove(id.as_bytes())? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    /// When pairing texts went to `number` and to anyone on `account` (ms).
    pub fn pairing_text_history(
        &self,
        account: &str,
        number: &E164,
    ) -> Result<(Vec<u64>, Vec<u64>), StoreError> {
        let mut to_sender = Vec::new();
        let mut to_account = Vec::new();
        let mine = key2(account, number.as_str());
        for key in self.texted.scan_prefix(prefix(account)).keys() {
            let key = key?;
            let Some(ts) = key
                .len()
                .checked_sub(8)
                .and_then(|i| key[i..].try_into().ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            to_account.push(ts);
            if key.starts_with(&mine) && key.get(mine.len()) == Some(&0) {
                to_sender.push(ts);
            }
        }
        Ok((to_sender, to_account))
    }

    /// Forgets pairing-text history older than `max_age_ms`.
    pub fn prune_texted(&self, now: u64, max_age_ms: u64) -> Result<(), StoreError> {
        for key in self.texted.iter().keys() {
            let key = key?;
            let ts = key
                .len()
                .checked_sub(8)
                .and_then(|i| key[i..].try_into().ok())
                .map_or(0, u64::from_be_bytes);
            if now.saturating_sub(ts) > max_age_ms {
                self.texted.remove(key)?;
            }
        }
        Ok(())
    }

    pub fn dead_len(&self) -> usize {
        self.dead.len()
    }

    // ---- the outbound queue ------------------------------------------------------------

    pub fn enqueue(&self, records: &[OutboundRecord]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for r in records {
            batch.insert(&r.id.to_be_bytes(), enc(r));
        }
        self.outbound.apply_batch(batch)?;
        Ok(())
    }

    pub fn new_outbound(
        &self,
        account: &str,
        to: E164,
        body: String,
        purpose: Purpose,
        now: u64,
    ) -> Result<OutboundRecord, StoreError> {
        Ok(OutboundRecord::new(
            self.next_id()?,
            account,
            to,
            body,
            purpose,
            now,
        ))
    }

    pub fn outbound(&self) -> Result<Vec<OutboundRecord>, StoreError> {
        self.outbound.iter().values().map(|v| dec(&v?)).collect()
    }

    pub fn outbound_len(&self) -> usize {
        self.outbound.len()
    }

    pub fn put_outbound(&self, r: &OutboundRecord) -> Result<(), StoreError> {
        self.outbound.insert(r.id.to_be_bytes(), enc(r))?;
        Ok(())
    }

    pub fn remove_outbound(&self, id: u64) -> Result<(), StoreError> {
        self.outbound.remove(id.to_be_bytes())?;
        Ok(())
    }

    /// After a crash, a send that was in flight may or may not have reached Twilio.
    pub fn mark_interrupted_sends_unknown(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for r in self.outbound()? {
            if r.state == OutboundState::Sending {
                let mut r = r;
                r.state = OutboundState::Unknown;
                r.last_error = Some("the daemon stopped while this send was in flight; it may or may not have been sent".into());
                self.put_outbound(&r)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl OutboundRecord {
    pub fn new(id: u64, account: &str, to: E164, body: String, purpose: Purpose, now: u64) -> Self {
        Self {
            id,
            account: account.to_string(),
            to,
            body,
            media_urls: Vec::new(),
            purpose,
            state: OutboundState::Queued,
            attempts: 0,
            next_attempt_ms: now,
            created_ms: now,
            last_error: None,
            group: None,
            part: 0,
            parts: 1,
        }
    }
}

/// The state changes that processing one inbound message makes.
#[derive(Debug, Default)]
pub struct Effects {
    pub now: u64,
    pub forward: Option<AgentMessage>,
    pub new_pairing: Option<PairingRequest>,
    pub expire_pairing: Vec<PairingRequest>,
    /// (account, number, opted out?)
    pub opt: Option<(String, E164, bool)>,
    pub outbound: Vec<OutboundRecord>,
    /// A pairing text went to (account, number): counts against the SMS budget.
    pub texted: Option<(String, E164)>,
}

fn wrong_owner(state_dir: &Path, owner: u32) -> StoreError {
    let me = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let name = user_name(owner);
    let in_container = ["/.dockerenv", "/run/.containerenv"]
        .iter()
        .any(|p| Path::new(p).exists())
        || std::env::var_os("container").is_some();
    StoreError::WrongOwner {
        path: state_dir.to_path_buf(),
        fix: ownership_fix(state_dir, owner, &name, me, gid, in_container),
        owner,
        name,
        me,
    }
}

/// What an operator should do when the state directory belongs to `owner` and smsgate
/// runs as `me`:`gid`. Running as the owner suits an operator's CLI command run as the
/// wrong user (root, say); it is the wrong advice for the daemon in a container, which
/// runs as a fixed uid (10001 in our image): there the directory, usually a bind mount
/// created by root on the host, must be given to that uid.
pub fn ownership_fix(
    state_dir: &Path,
    owner: u32,
    owner_name: &str,
    me: u32,
    gid: u32,
    in_container: bool,
) -> String {
    let dir = state_dir.display();
    let chown = format!("chown -R {me}:{gid} {dir}");
    if me == 0 && in_container {
        format!("run this command as that user: `docker exec -u {owner} …`")
    } else if me == 0 {
        format!("run this command as that user, e.g. `sudo -u {owner_name} smsgate …`")
    } else if in_container {
        format!("this container runs smsgate as uid {me}, so give it the directory: `{chown}` (for a bind mount, run that on the host's directory, e.g. `sudo chown -R {me}:{gid} /srv/smsgate`)")
    } else if owner == 0 {
        format!("give the directory to the user smsgate runs as: `sudo {chown}`")
    } else {
        format!("run this command as that user (`sudo -u {owner_name} smsgate …`), or, if smsgate should run as uid {me}, give it the directory: `sudo {chown}`")
    }
}

fn user_name(uid: u32) -> String {
    // /etc/passwd is the portable answer without NSS bindings; good enough for a hint.
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Batches fsyncs: every waiter that arrives while a flush runs shares the next one, so
/// N concurrent webhooks cost about two fsyncs, not N.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<oneshot::Sender<Result<(), StoreError>>>,
    /// Flushes done and microseconds spent in them, for the metrics.
    stats: Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
}

impl GroupCommit {
    pub fn start(store: Arc<Store>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<Result<(), StoreError>>>();
        let stats = Arc::new((
            std::sync::atomic::AtomicU64::new(0),
            std::sync::atomic::AtomicU64::new(0),
        ));
        let counters = stats.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(w) = rx.try_recv() {
                    batch.push(w);
                }
                let s = store.clone();
                let started = std::time::Instant::now();
                let result = tokio::task::spawn_blocking(move || s.flush())
                    .await
                    .unwrap_or_else(|e| Err(StoreError::Io(format!("flush task failed: {e}"))));
                counters
                    .0
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                counters.1.fetch_add(
                    started.elapsed().as_micros() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                tracing::trace!(
                    waiters = batch.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "group commit"
                );
                for w in batch {
                    let _ = w.send(result.clone());
                }
            }
        });
        Self { tx, stats }
    }

    /// (flushes, total microseconds).
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.stats.0.load(Relaxed), self.stats.1.load(Relaxed))
    }

    /// Returns once everything written before the call is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .map_err(|_| StoreError::Io("the flush task has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Io("the flush task has stopped".into()))?
    }
}

#[cfg(test)]
mod ownership_tests {
    use super::ownership_fix;
    use std::path::Path;

    #[test]
    fn the_fix_depends_on_who_runs_and_where() {
        let dir = Path::new("/var/lib/smsgate");
        // (owner, owner name, me, in a container) -> must contain, must not contain
        let table: &[(u32, &str, u32, bool, &str, &str)] = &[
            // The image's fixed uid on a root-owned bind mount: chown, never "run as root".
            (
                0,
                "root",
                10001,
                true,
                "chown -R 10001:10001",
                "sudo -u root",
            ),
            // Same, the mount made by a host user.
            (
                1000,
                "uid 1000",
                10001,
                true,
                "chown -R 10001:10001",
                "sudo -u",
            ),
            // An operator's CLI run as root on the service's store: run as its owner.
            (998, "smsgate", 0, false, "sudo -u smsgate smsgate", "chown"),
            // A service user on a root-owned directory on a VPS: chown, not "run as root".
            (
                0,
                "root",
                998,
                false,
                "sudo chown -R 998:10001",
                "sudo -u root",
            ),
            // `docker exec -u 0` on the image's store: as its owner, not chown to root.
            (10001, "uid 10001", 0, true, "docker exec -u 10001", "chown"),
            // Two ordinary users: either way, both named.
            (
                1000,
                "alice",
                998,
                false,
                "sudo -u alice smsgate",
                "-u root",
            ),
        ];
        for &(owner, name, me, container, want, never) in table {
            let fix = ownership_fix(dir, owner, name, me, 10001, container);
            assert!(fix.contains(want), "{owner} {me} {container}: {fix}");
            assert!(!fix.contains(never), "{owner} {me} {container}: {fix}");
        }
    }
}
