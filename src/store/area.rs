//! Every record lives in ONE sled tree, split into areas by a one-byte key prefix, so
//! that every change one event makes (a message's dedupe mark and its inbox entry; an
//! ack and the reply it queues) is one `sled::Batch` on one tree: atomic across a
//! crash without sled's multi-tree transactions, which cost ~5x a plain write and seal
//! an IO buffer each. The single writer ([`super::writer`]) makes read-then-write
//! race-free, so no transaction is needed for isolation either.

use sled::IVec;

use super::StoreError;

/// One area of the tree: its key prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Tag {
    /// Written by earlier versions: one key per processed SID or status-callback key →
    /// [`seen_value`]. Moved into [`Tag::Dedupe`] buckets at open.
    Seen = b's',
    /// Dedupe marks (processed SIDs, status-callback keys), packed into buckets by
    /// [`super::dedupe`]: bucket number (u16 BE) → entries.
    Dedupe = b'S',
    /// Admitted, not yet processed webhooks, by sequence number.
    Spool = b'q',
    /// Webhooks kept but never processed, by sequence number.
    Rejected = b'x',
    /// Messages for the agent, by sequence number.
    Inbox = b'i',
    /// Message id → where late replies go.
    Route = b'r',
    /// Dead letters by message id.
    Dead = b'd',
    /// Written by earlier versions: the latest delivery status per outbound Twilio SID,
    /// one key each. Moved into [`Tag::Statuses`] buckets at open.
    Status = b't',
    /// Delivery statuses packed into buckets by [`super::statuses`]: bucket number
    /// (u16 BE) → SID → status entry.
    Statuses = b'T',
    /// Sends waiting or in flight, by id: what the sender loads at start.
    Outbound = b'o',
    /// Sends that ended unknown or failed, by id (kept for `queue list`).
    Finished = b'f',
    /// Pairing requests: account \0 code.
    Pairing = b'p',
    /// Approved senders: account \0 number.
    Approved = b'a',
    /// Opted-out numbers: account \0 number → time.
    OptOut = b'n',
    /// Pairing texts sent: account \0 number \0 time.
    Texted = b'm',
    /// Records that failed to decode, under their area tag and original key.
    Quarantine = b'Q',
    /// (account, sender) → the sender's current conversation id.
    Conversation = b'c',
    /// Written by earlier versions: (account, time, id) → (recipient, segments) of a
    /// send, one key each. Moved into [`Tag::SentMinutes`] at open.
    SentLog = b'L',
    /// Pending asks of the agent (CONTRACT §9): account \0 code → [`super::AskRecord`].
    Asks = b'E',
    /// Decided asks, the audit: account \0 decided-at (u64 BE) code →
    /// [`super::AskRecord`]; the last 100 per account, 30 days at most.
    Decided = b'e',
    /// Media the agent sent, by token (32 hex digits) → the raw bytes (CONTRACT §10).
    MediaBlob = b'M',
    /// Media token → what the media route and the prune need ([`super::MediaMeta`]):
    /// type, filename, the send it belongs to, when Twilio accepted it.
    MediaIndex = b'B',
    /// The sends of the last day per account and minute ([`super::sent`]): what the
    /// spending limits count.
    SentMinutes = b'N',
    /// WhatsApp senders' last inbound time (CONTRACT §12): account \0 address → ms.
    WhatsappSeen = b'w',
    /// Texts held outside WhatsApp's 24-hour window until the person writes again:
    /// account \0 address \0 id → the send ([`super::whatsapp`]).
    WhatsappHeld = b'W',
}

/// The open database; `None` while the writer reopens it after a write error.
#[derive(Clone)]
pub(crate) struct Handles {
    pub(crate) db: sled::Db,
    pub(crate) data: sled::Tree,
}

pub(crate) type Cell = std::sync::Arc<std::sync::RwLock<Option<Handles>>>;

pub(crate) fn handles(cell: &Cell) -> Result<Handles, StoreError> {
    cell.read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| StoreError::Io("the store is being reopened after a write error".into()))
}

/// A view of one area.
#[derive(Clone)]
pub(crate) struct Area {
    pub(crate) cell: Cell,
    pub(crate) tag: Tag,
}

impl Area {
    fn tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(handles(&self.cell)?.data)
    }

    pub(crate) fn full_key(&self, k: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(k.len() + 1);
        v.push(self.tag as u8);
        v.extend_from_slice(k);
        v
    }

    pub(crate) fn get(&self, k: impl AsRef<[u8]>) -> Result<Option<IVec>, StoreError> {
        let key = self.full_key(k.as_ref());
        if let Some(v) = pending_get(&key) {
            return Ok(v);
        }
        Ok(self.tree()?.get(key)?)
    }

    pub(crate) fn contains_key(&self, k: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        let key = self.full_key(k.as_ref());
        if let Some(v) = pending_get(&key) {
            return Ok(v.is_some());
        }
        Ok(self.tree()?.contains_key(key)?)
    }

    /// Entries whose key (without the area tag) starts with `prefix`, in key order;
    /// keys come back without the tag.
    pub(crate) fn scan(&self, prefix: &[u8]) -> Iter {
        let full = self.full_key(prefix);
        let tree = match self.tree() {
            Ok(t) => t,
            Err(e) => return Iter::Failed(Some(e)),
        };
        let pending = pending_range(&full);
        if pending.is_empty() {
            return Iter::Items(Box::new(tree.scan_prefix(full)));
        }
        // The writer scanning an area it has pending changes in: merge them in as the
        // scan goes (both are in key order), without copying the area (it may hold a
        // million dedupe marks).
        Iter::Merged(Box::new(Merge {
            stored: tree.scan_prefix(full).peekable(),
            pending: pending.into_iter().peekable(),
        }))
    }

    pub(crate) fn iter(&self) -> Iter {
        self.scan(&[])
    }

    /// The area as it is on disk, without this thread's pending changes (for a job
    /// that writes with `apply_now` and must not make a pending change durable early).
    pub(crate) fn iter_stored(&self) -> Iter {
        match self.tree() {
            Ok(t) => Iter::Items(Box::new(t.scan_prefix([self.tag as u8]))),
            Err(e) => Iter::Failed(Some(e)),
        }
    }

    /// Whether this thread's pending changes touch `k`.
    pub(crate) fn has_pending(&self, k: &[u8]) -> bool {
        pending_get(&self.full_key(k)).is_some()
    }

    pub(crate) fn first(&self) -> Result<Option<(IVec, IVec)>, StoreError> {
        self.iter().next().transpose()
    }

    /// Counts by walking the area (sled keeps no counts); for gauges, not hot paths.
    pub(crate) fn len(&self) -> usize {
        self.iter().filter(Result::is_ok).count()
    }
}

/// An area's entries in key order, keys without the area tag.
pub(crate) enum Iter {
    Items(Box<sled::Iter>),
    /// The writer's view: sled's entries with its pending changes merged in.
    Merged(Box<Merge>),
    Failed(Option<StoreError>),
}

/// Stored entries and pending changes, both in key order, merged: a pending value
/// replaces the stored one, a pending removal hides it.
pub(crate) struct Merge {
    stored: std::iter::Peekable<sled::Iter>,
    pending: std::iter::Peekable<std::vec::IntoIter<(Vec<u8>, Option<IVec>)>>,
}

impl Iterator for Merge {
    type Item = Result<(IVec, IVec), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::cmp::Ordering;
        loop {
            let order = match (self.stored.peek(), self.pending.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) => {
                    return self.stored.next().map(|r| r.map_err(StoreError::from));
                }
                (Some(Ok(_)), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(Ok((k, _))), Some((p, _))) => k.as_ref().cmp(p.as_slice()),
            };
            if order == Ordering::Less {
                return self.stored.next().map(|r| r.map_err(StoreError::from));
            }
            if order == Ordering::Equal {
                self.stored.next();
            }
            if let Some((k, Some(v))) = self.pending.next() {
                return Some(Ok((IVec::from(k), v)));
            }
        }
    }
}

impl Iterator for Iter {
    type Item = Result<(IVec, IVec), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Items(it) => it.next().map(|item| {
                let (k, v) = item?;
                Ok((IVec::from(&k[1..]), v))
            }),
            Iter::Merged(it) => it
                .next()
                .map(|item| item.map(|(k, v)| (IVec::from(&k[1..]), v))),
            Iter::Failed(e) => e.take().map(Err),
        }
    }
}

/// Changes to apply together, atomically, with [`super::Store::apply`].
#[derive(Default)]
pub(crate) struct Batch {
    /// Full keys (area tag included) and their new value, `None` to remove; in order.
    pub(crate) ops: Vec<(Vec<u8>, Option<IVec>)>,
}

impl Batch {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn insert(&mut self, area: &Area, k: impl AsRef<[u8]>, v: impl Into<IVec>) {
        self.ops.push((area.full_key(k.as_ref()), Some(v.into())));
    }

    pub(crate) fn remove(&mut self, area: &Area, k: impl AsRef<[u8]>) {
        self.ops.push((area.full_key(k.as_ref()), None));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The last change this batch makes to `k` in `area`: `Some(None)` for a removal,
    /// `None` when it does not touch it.
    pub(crate) fn latest(&self, area: &Area, k: &[u8]) -> Option<Option<&IVec>> {
        let key = area.full_key(k);
        self.ops
            .iter()
            .rev()
            .find(|(op_key, _)| *op_key == key)
            .map(|(_, v)| v.as_ref())
    }

    pub(crate) fn into_sled(self) -> sled::Batch {
        let mut b = sled::Batch::default();
        for (k, v) in self.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        b
    }
}

// ---- the writer's pending batch ---------------------------------------------------
//
// Why: sled 0.34 seals and writes its IO buffer (a pwrite and a sync_file_range on a
// pool thread) twice for EVERY `apply_batch`, so one batch per message cost ~190 µs of
// CPU against ~40 µs for the same inserts applied as one batch per fsync
// (docs/performance.md, "sled batches"). The writer therefore collects the changes of
// every request it applies under one fsync into one pending batch, applies that once,
// and flushes. Requests in the same round must still see each other's changes (a
// repeated SID, a sender's first message creating its conversation), so reads on the
// writer thread look at the pending changes first. Other threads never see them until
// they are applied, exactly as before: nothing is visible to them that the writer has
// not at least applied, and what they act on they learn from after-commit hooks.
//
// It is thread-local because only the writer thread ever has one: a store method run
// elsewhere (a test, startup) applies directly, as before.

thread_local! {
    static PENDING: std::cell::RefCell<Option<Pending>> = const { std::cell::RefCell::new(None) };
}

/// The writer's changes not yet applied to sled: the ops in order, and the latest value
/// per key for reads.
#[derive(Default)]
struct Pending {
    ops: Vec<(Vec<u8>, Option<IVec>)>,
    latest: std::collections::BTreeMap<Vec<u8>, Option<IVec>>,
}

/// Starts collecting this thread's writes (the writer, at the start of a round).
pub(crate) fn pending_begin() {
    PENDING.with(|p| *p.borrow_mut() = Some(Pending::default()));
}

/// Where this thread's pending ops are now: a request's savepoint.
pub(crate) fn pending_mark() -> usize {
    PENDING.with(|p| p.borrow().as_ref().map_or(0, |p| p.ops.len()))
}

/// Drops the ops after `mark`: a request that failed leaves nothing behind.
pub(crate) fn pending_rollback(mark: usize) {
    PENDING.with(|p| {
        if let Some(p) = p.borrow_mut().as_mut() {
            if p.ops.len() > mark {
                p.ops.truncate(mark);
                p.latest = p.ops.iter().cloned().collect();
            }
        }
    });
}

/// Ends collecting and returns what was collected (empty when nothing was).
pub(crate) fn pending_take() -> Batch {
    PENDING.with(|p| Batch {
        ops: p.borrow_mut().take().map(|p| p.ops).unwrap_or_default(),
    })
}

/// Whether this thread is collecting (then [`super::Store::apply`] defers to the writer).
pub(crate) fn pending_active() -> bool {
    PENDING.with(|p| p.borrow().is_some())
}

/// Adds `batch` to this thread's pending changes; gives it back if there are none.
pub(crate) fn pending_push(batch: Batch) -> Option<Batch> {
    PENDING.with(|p| match p.borrow_mut().as_mut() {
        Some(p) => {
            for (k, v) in &batch.ops {
                p.latest.insert(k.clone(), v.clone());
            }
            p.ops.extend(batch.ops);
            None
        }
        None => Some(batch),
    })
}

/// The pending value of `key`: `Some(None)` if it is pending removal, `None` if the
/// pending changes do not touch it.
fn pending_get(key: &[u8]) -> Option<Option<IVec>> {
    PENDING.with(|p| p.borrow().as_ref().and_then(|p| p.latest.get(key).cloned()))
}

/// The pending changes to keys starting with `prefix`, in key order.
fn pending_range(prefix: &[u8]) -> Vec<(Vec<u8>, Option<IVec>)> {
    PENDING.with(|p| {
        p.borrow().as_ref().map_or_else(Vec::new, |p| {
            p.latest
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    })
}

// ---- typed keys -------------------------------------------------------------------

/// A sequence-numbered key (spool, inbox, rejected, outbound): big-endian, so key order
/// is arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

impl Seq {
    pub(crate) fn bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// `None` for a key that is not 8 bytes (a foreign or damaged key).
    pub(crate) fn parse(key: &[u8]) -> Option<Self> {
        key.try_into().ok().map(u64::from_be_bytes).map(Seq)
    }
}

/// `account \0 rest`: per-account keys (pairing, approved, opt-outs).
pub(crate) fn pair_key(account: &str, rest: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + rest.len() + 1);
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k.extend_from_slice(rest.as_bytes());
    k
}

/// `account \0`: the prefix of one account's keys.
pub(crate) fn account_prefix(account: &str) -> Vec<u8> {
    let mut k = account.as_bytes().to_vec();
    k.push(0);
    k
}

/// `account \0 number \0 time`: one pairing text.
pub(crate) fn texted_key(account: &str, number: &str, at_ms: u64) -> Vec<u8> {
    let mut k = pair_key(account, number);
    k.push(0);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k
}

/// The time at the end of a [`texted_key`].
pub(crate) fn texted_time(key: &[u8]) -> Option<u64> {
    key.len()
        .checked_sub(8)
        .and_then(|i| key[i..].try_into().ok())
        .map(u64::from_be_bytes)
}

/// `account \0 time id`: one send that went out, as earlier versions logged it
/// (tests write it to check the migration to [`super::sent`]).
#[cfg(test)]
pub(crate) fn sent_key(account: &str, at_ms: u64, id: u64) -> Vec<u8> {
    let mut k = account_prefix(account);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The account and time of a [`sent_key`].
pub(crate) fn sent_key_parts(key: &[u8]) -> Option<(String, u64)> {
    let zero = key.iter().position(|&b| b == 0)?;
    let account = std::str::from_utf8(&key[..zero]).ok()?.to_string();
    let at = key
        .get(zero + 1..zero + 9)?
        .try_into()
        .ok()
        .map(u64::from_be_bytes)?;
    Some((account, at))
}

/// The value of a processed SID: when it was admitted (u64 BE), and for a message that
/// went to the agent, `account \0 sender`: the reply route. Why here: an ack then only
/// removes the inbox entry instead of also writing a route record (one sled insert
/// and one encode less per message), and no separate route area has to be walked and
/// pruned; the route lives as long as the dedupe mark, and its age is checked when a
/// late reply uses it.
pub(crate) fn seen_value(at_ms: u64, route: Option<(&str, &str)>) -> Vec<u8> {
    let mut v = at_ms.to_be_bytes().to_vec();
    if let Some((account, sender)) = route {
        v.extend_from_slice(account.as_bytes());
        v.push(0);
        v.extend_from_slice(sender.as_bytes());
    }
    v
}

/// The admission time in a [`seen_value`] (`None` if it is too short to hold one).
pub(crate) fn seen_time(v: &[u8]) -> Option<u64> {
    v.get(..8)?.try_into().ok().map(u64::from_be_bytes)
}

/// The reply route in a [`seen_value`]: (account, sender), if it has one.
pub(crate) fn seen_route(v: &[u8]) -> Option<(&str, &str)> {
    let rest = v.get(8..).filter(|r| !r.is_empty())?;
    let zero = rest.iter().position(|&b| b == 0)?;
    let account = std::str::from_utf8(&rest[..zero]).ok()?;
    let sender = std::str::from_utf8(&rest[zero + 1..]).ok()?;
    Some((account, sender))
}

/// The dedupe key of a delivery status callback: (SID, status).
pub(crate) fn status_seen_key(sid: &str, status: &str) -> Vec<u8> {
    pair_key(&format!("status:{sid}"), status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_table() {
        assert_eq!(Seq::parse(&Seq(7).bytes()), Some(Seq(7)));
        assert_eq!(Seq::parse(b"short"), None);
        assert!(
            Seq(1).bytes() < Seq(256).bytes(),
            "byte order is numeric order"
        );
        assert_eq!(pair_key("a", "b"), b"a\0b");
        assert!(pair_key("a", "+1").starts_with(&account_prefix("a")));
        assert!(!pair_key("ab", "+1").starts_with(&account_prefix("a")));
        let k = texted_key("a", "+1", 42);
        assert_eq!(texted_time(&k), Some(42));
        assert_eq!(
            sent_key_parts(&sent_key("acc", 42, 7)),
            Some(("acc".into(), 42))
        );
        assert!(
            sent_key("a", 1, 9) < sent_key("a", 2, 0),
            "time order within an account"
        );
        assert_eq!(sent_key_parts(b"no zero"), None);
        assert!(k.starts_with(&pair_key("a", "+1")));
        assert_eq!(texted_time(b"x"), None);
        let v = seen_value(42, Some(("acc", "+15551234567")));
        assert_eq!(seen_time(&v), Some(42));
        assert_eq!(seen_route(&v), Some(("acc", "+15551234567")));
        let plain = seen_value(7, None);
        assert_eq!(plain, 7u64.to_be_bytes().to_vec(), "the old 8-byte form");
        assert_eq!((seen_time(&plain), seen_route(&plain)), (Some(7), None));
        assert_eq!((seen_time(b"short"), seen_route(b"short")), (None, None));
        let mut no_zero = 1u64.to_be_bytes().to_vec();
        no_zero.extend_from_slice(b"accnozero");
        assert_eq!(seen_route(&no_zero), None);
    }
}
