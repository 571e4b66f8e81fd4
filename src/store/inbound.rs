//! Admission: dedupe marks, the spool (admitted, not yet processed), rejected webhooks
//! and delivery statuses.

use super::area::{handles, seen_time, seen_value, status_seen_key, Batch, Seq, Tag};
use super::dedupe::{self, bucket_of, EncodeError};
use sled::IVec;

use super::{
    dec, enc, Admission, Effects, InboundRecord, RejectedRecord, StatusRecord, StatusUpdate, Store,
    StoreError,
};

/// A dedupe key's bucket as [`Store::seen`] read it.
pub(crate) struct Seen {
    key: Vec<u8>,
    n: [u8; 2],
    bucket: Option<IVec>,
    mark: Option<Vec<u8>>,
}

impl Seen {
    /// Whether the key has a mark: the message (or status) was seen before.
    pub(crate) fn is_marked(&self) -> bool {
        self.mark.is_some()
    }
}

/// Buckets rewritten per `apply_batch` by the prune and the migration: bounds memory.
const BUCKETS_PER_BATCH: usize = 1_000;
/// The migration reports progress at least this often (marks read or removed).
const PROGRESS_EVERY: usize = 10_000;

impl Store {
    /// Whether a message SID was admitted (or rejected) before.
    pub fn is_seen(&self, sid: &str) -> Result<bool, StoreError> {
        Ok(self.seen(sid.as_bytes())?.is_marked())
    }

    /// The dedupe mark of `key` (a [`seen_value`]), if it was seen.
    pub(crate) fn seen_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.seen(key)?.mark)
    }

    /// Reads `key`'s dedupe bucket: one sled read, which [`Store::mark_into`] reuses, so
    /// checking and marking a message cost one read. Of a bucket that does not decode,
    /// the marks before the bad point count (logged); the next mark written to it keeps
    /// its raw bytes in the quarantine area and rewrites it with those marks.
    pub(crate) fn seen(&self, key: &[u8]) -> Result<Seen, StoreError> {
        let n = bucket_of(key);
        let bucket = self.dedupe.get(n)?;
        let mark = match bucket.as_deref().map(|b| dedupe::find(b, key)) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(v))) => Some(v.to_vec()),
            Some(Err(dedupe::Corrupt)) => {
                tracing::error!(
                    "a dedupe bucket does not decode; using the marks before the bad one (the next mark written to it keeps its raw bytes in the quarantine area)"
                );
                let kept = dedupe::salvage(bucket.as_deref().unwrap_or_default());
                dedupe::find(&kept, key).ok().flatten().map(<[u8]>::to_vec)
            }
        };
        Ok(Seen {
            key: key.to_vec(),
            n,
            bucket,
            mark,
        })
    }

    /// Adds the dedupe mark `seen`'s key → `value` to `b`: its bucket, rewritten. Reads
    /// again only if the bucket changed since `seen` was read (in `b`, or in the
    /// writer's round, where a read costs no sled access).
    pub(crate) fn mark_into(
        &self,
        b: &mut Batch,
        seen: Seen,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let Seen { key, n, bucket, .. } = seen;
        let current = match b.latest(&self.dedupe, &n) {
            Some(v) => v.cloned(),
            None if self.dedupe.has_pending(&n) => self.dedupe.get(n)?,
            None => bucket,
        };
        let base = current.as_deref().unwrap_or_default();
        let bucket = match dedupe::with(base, &key, value) {
            Ok(v) => v,
            Err(EncodeError::Corrupt(_)) => {
                self.keep_corrupt_bucket(b, &n, base);
                dedupe::with(&dedupe::salvage(base), &key, value)
                    .map_err(|_| StoreError::Decode("dedupe key too long".into()))?
            }
            Err(EncodeError::TooLong(_)) => {
                return Err(StoreError::Decode("dedupe key too long".into()))
            }
        };
        b.insert(&self.dedupe, n, bucket);
        Ok(())
    }

    /// Adds to `b` a copy of a dedupe bucket that does not decode, in the quarantine
    /// area (the caller then writes what could be salvaged in its place).
    fn keep_corrupt_bucket(&self, b: &mut Batch, n: &[u8; 2], raw: &[u8]) {
        tracing::error!("a dedupe bucket does not decode; kept its raw bytes in the quarantine area and rewrote the marks before the bad one");
        b.insert(&self.quarantine, self.dedupe.full_key(n), raw.to_vec());
    }

    /// Moves dedupe marks written by earlier versions (one sled key each) into buckets.
    /// Runs at open, before the writer starts. In passes over a quarter of the buckets
    /// each, so every bucket is written once (memory: a quarter of the marks); once all
    /// are flushed, the old keys are removed. A crash or a kill midway loses nothing: a
    /// mark is findable in its bucket once that is written, setting it again is
    /// idempotent, and the next open redoes the passes and removes what is left. (A
    /// million marks take 30–40 s here; systemd's start timeout, 90 s by default, is
    /// extended as it goes.)
    pub(crate) fn migrate_seen_marks(&self) -> Result<(), StoreError> {
        let mut keepalive = crate::systemd::StartKeepalive::default();
        self.migrate_seen_marks_with(&mut || keepalive.tick())
    }

    /// [`Store::migrate_seen_marks`], calling `progress` at least every
    /// [`PROGRESS_EVERY`] marks read or removed (so systemd's start timeout is extended
    /// while it runs: 30–40 s a million marks here, against its 90 s default).
    pub(crate) fn migrate_seen_marks_with(
        &self,
        progress: &mut dyn FnMut(),
    ) -> Result<(), StoreError> {
        const PASSES: u8 = 4;
        let h = handles(&self.cell)?;
        let legacy = [Tag::Seen as u8];
        if h.data.scan_prefix(legacy).next().is_none() {
            return Ok(());
        }
        tracing::info!("moving the dedupe marks into buckets (once, after an upgrade; 30-40 s a million marks)");
        let started = std::time::Instant::now();
        for pass in 0..PASSES {
            progress();
            let mut marks: std::collections::BTreeMap<[u8; 2], Vec<(sled::IVec, sled::IVec)>> =
                Default::default();
            for (i, item) in h.data.scan_prefix(legacy).enumerate() {
                if i % PROGRESS_EVERY == 0 {
                    progress();
                }
                let (k, v) = item?;
                let n = bucket_of(&k[1..]);
                if n[0] / (u8::MAX / PASSES + 1) == pass {
                    marks.entry(n).or_default().push((k, v));
                }
            }
            let mut b = sled::Batch::default();
            let mut in_batch = 0;
            for (n, items) in marks {
                let full = self.dedupe.full_key(&n);
                let mut bucket = match h.data.get(&full)? {
                    Some(stored) if dedupe::entries(&stored).is_err() => {
                        tracing::error!("a dedupe bucket does not decode; kept its raw bytes in the quarantine area");
                        b.insert(self.quarantine.full_key(&full), stored.clone());
                        dedupe::salvage(&stored)
                    }
                    Some(stored) => stored.to_vec(),
                    None => Vec::new(),
                };
                for (k, v) in items {
                    if let Ok(next) = dedupe::with(&bucket, &k[1..], &v) {
                        bucket = next;
                    }
                }
                b.insert(full, bucket);
                in_batch += 1;
                if in_batch % BUCKETS_PER_BATCH == 0 {
                    progress();
                    h.data.apply_batch(std::mem::take(&mut b))?;
                }
            }
            h.data.apply_batch(b)?;
        }
        progress();
        h.db.flush()?;
        // Every mark is durable in its bucket: the old keys go, in key order. (Removing
        // each pass's keys after that pass, to resume a killed start pass by pass, took
        // 650–830 MiB at a million marks against 180 MiB this way.) Each chunk starts
        // after the last key removed, not at the start of the area: rescanning from the
        // start stepped over everything removed so far, a chunk slower each time.
        let moved = super::remove_prefix(&h, &legacy, progress)?;
        progress();
        h.db.flush()?;
        tracing::info!(
            marks = moved,
            millis = started.elapsed().as_millis() as u64,
            "moved the dedupe marks into buckets (once, after an upgrade)"
        );
        Ok(())
    }

    /// Admits a message and applies what processing it decided, as one batch: its
    /// dedupe mark and its effects (inbox entry, pairing request, texts) together.
    /// Writer only; `seen` is the SID's bucket, read and found unmarked by
    /// [`Store::seen`] in the same request. Returns the inbox sequence number when the
    /// message went to the agent.
    pub(crate) fn admit_processed(
        &self,
        seen: Seen,
        received_at_ms: u64,
        effects: &Effects,
    ) -> Result<Option<Seq>, StoreError> {
        let mut b = Batch::new();
        let route = effects
            .forward
            .as_ref()
            .map(|m| (m.account.as_str(), m.from.as_str()));
        self.mark_into(&mut b, seen, &seen_value(received_at_ms, route))?;
        let seq = self.effects_batch(&mut b, effects)?;
        self.apply(b)?;
        Ok(seq)
    }

    /// Records `record` in the spool unless its SID was seen before (the path for
    /// processing later; the daemon processes at admission instead).
    pub fn admit(&self, record: &InboundRecord) -> Result<Admission, StoreError> {
        let seen = self.seen(record.sid.as_bytes())?;
        if seen.is_marked() {
            return Ok(Admission::Duplicate);
        }
        let seq = Seq(self.next_id()?);
        let mut b = Batch::new();
        self.mark_into(&mut b, seen, &seen_value(record.received_at_ms, None))?;
        b.insert(&self.spool, seq.bytes(), enc(record));
        self.apply(b)?;
        Ok(Admission::Admitted)
    }

    /// Keeps a webhook that must never be processed, deduplicated like admissions.
    pub fn admit_rejected(&self, record: &RejectedRecord) -> Result<Admission, StoreError> {
        let seen = self.seen(record.sid.as_bytes())?;
        if seen.is_marked() {
            return Ok(Admission::Duplicate);
        }
        let seq = Seq(self.next_id()?);
        let mut b = Batch::new();
        self.mark_into(&mut b, seen, &seen_value(record.received_at_ms, None))?;
        b.insert(&self.rejected, seq.bytes(), enc(record));
        self.apply(b)?;
        Ok(Admission::Admitted)
    }

    pub fn rejected(&self) -> Result<Vec<RejectedRecord>, StoreError> {
        self.rejected.iter().map(|item| dec(&item?.1)).collect()
    }

    /// Records a delivery status callback, deduplicated on (SID, status). A terminal
    /// status is never replaced by a later non-terminal one (callbacks come out of
    /// order). A callback for a SID with no status record (not a send of ours, or one
    /// pruned) stores nothing, not even a dedupe mark: anyone who can sign a callback
    /// must not grow the store with made-up SIDs. Returns what happened.
    pub fn record_status(
        &self,
        sid: &str,
        status: &str,
        error_code: Option<&str>,
        now: u64,
    ) -> Result<StatusUpdate, StoreError> {
        let seen = self.seen(&status_seen_key(sid, status))?;
        if seen.is_marked() {
            return Ok(StatusUpdate::Duplicate);
        }
        if !self.is_our_sid(sid)? {
            return Ok(StatusUpdate::NotOurs);
        }
        let mut b = Batch::new();
        self.mark_into(&mut b, seen, &seen_value(now, None))?;
        let current = self.delivery_status(sid)?;
        let update = if crate::twilio::status_may_replace(current.as_deref(), status) {
            let rec = StatusRecord {
                status: status.to_string(),
                error_code: error_code.map(str::to_string),
                at: now,
            };
            self.status_put_into(&mut b, sid, &rec)?;
            StatusUpdate::Applied
        } else {
            StatusUpdate::Stale
        };
        self.apply(b)?;
        Ok(update)
    }

    /// Whether `sid` is a message we sent (it has a status record, readable or not),
    /// within [`super::STATUS_RETENTION_MS`].
    pub fn is_our_sid(&self, sid: &str) -> Result<bool, StoreError> {
        Ok(self.status_entry(None, sid)?.is_some())
    }

    /// Adds to `b` the status record of a message we just sent (`status`: Twilio's
    /// answer to the create), unless it has one (a callback may have come first).
    pub(crate) fn note_sent_into(
        &self,
        b: &mut Batch,
        sid: &str,
        status: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        if self.status_entry(Some(b), sid)?.is_none() {
            let rec = StatusRecord {
                status: status.to_string(),
                error_code: None,
                at: now,
            };
            self.status_put_into(b, sid, &rec)?;
        }
        Ok(())
    }

    /// Records `sid` as a message we sent, outside the send queue (`message send`
    /// without a daemon, tests).
    pub fn note_sent(&self, sid: &str, status: &str, now: u64) -> Result<(), StoreError> {
        let mut b = Batch::new();
        self.note_sent_into(&mut b, sid, status, now)?;
        self.apply(b)
    }

    pub fn delivery_status(&self, sid: &str) -> Result<Option<String>, StoreError> {
        match self.status_entry(None, sid)? {
            // An unreadable status record counts as none: a newer callback replaces it.
            Some(v) => Ok(super::statuses::decode(&v).ok().map(|r| r.status)),
            None => Ok(None),
        }
    }

    /// Forgets dedupe keys older than `max_age_ms` (at least a day is kept: Twilio
    /// retries within minutes, but operators replay from the console later). Writer
    /// only; removes in bounded batches.
    pub fn prune_seen(&self, now: u64, max_age_ms: u64) -> Result<usize, StoreError> {
        self.prune_buckets(
            &self.dedupe,
            |mark| now.saturating_sub(seen_time(mark).unwrap_or(0)) > max_age_ms,
            |st, b, k, v| {
                if let Ok(bucket) = <[u8; 2]>::try_from(k) {
                    st.keep_corrupt_bucket(b, &bucket, v);
                }
            },
        )
    }

    /// Drops the entries `expired` names from every bucket of `area` (the dedupe
    /// codec); returns how many. A corrupt bucket is handed to `on_corrupt` (to be
    /// quarantined) and what of it can be salvaged is kept.
    ///
    /// The buckets as stored, and none the round has pending changes to (they are
    /// pruned next time): the prune writes at once, in bounded batches (a big prune
    /// would otherwise hold every rewritten bucket in memory), so a bucket holding an
    /// entry of this round must not reach the disk before that round's other changes.
    pub(crate) fn prune_buckets(
        &self,
        area: &super::area::Area,
        mut expired: impl FnMut(&[u8]) -> bool,
        mut on_corrupt: impl FnMut(&Self, &mut Batch, &[u8], &[u8]),
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut rewritten = 0;
        let mut b = Batch::new();
        for item in area.iter_stored() {
            let (k, v) = item?;
            if area.has_pending(&k) {
                continue;
            }
            let mut dropped = 0;
            let mut keep = |_: &[u8], entry: &[u8]| {
                let old = expired(entry);
                dropped += usize::from(old);
                !old
            };
            let kept = match dedupe::retain(&v, &mut keep) {
                Ok(kept) => kept,
                Err(dedupe::Corrupt) => {
                    on_corrupt(self, &mut b, &k, &v);
                    let salvaged = dedupe::salvage(&v);
                    Some(
                        dedupe::retain(&salvaged, &mut keep)
                            .ok()
                            .flatten()
                            .unwrap_or(salvaged),
                    )
                }
            };
            match kept {
                None => continue,
                Some(bucket) if bucket.is_empty() => b.remove(area, &k),
                Some(bucket) => b.insert(area, &k, bucket),
            }
            n += dropped;
            rewritten += 1;
            if rewritten % BUCKETS_PER_BATCH == 0 {
                self.apply_now(std::mem::replace(&mut b, Batch::new()))?;
            }
        }
        self.apply_now(b)?;
        Ok(n)
    }

    // ---- the spool ----------------------------------------------------------------

    /// The oldest unprocessed inbound webhook; one that does not decode is quarantined.
    pub fn next_spooled(&self) -> Result<Option<(Seq, InboundRecord)>, StoreError> {
        loop {
            let Some((k, v)) = self.spool.first()? else {
                return Ok(None);
            };
            match (Seq::parse(&k), dec::<InboundRecord>(&v)) {
                (Some(seq), Ok(rec)) => return Ok(Some((seq, rec))),
                (_, Err(e)) => self.quarantine(&self.spool, &k, &e),
                (None, Ok(_)) => {
                    self.quarantine(&self.spool, &k, &StoreError::Decode("bad key".into()))
                }
            }
        }
    }

    pub fn spool_len(&self) -> usize {
        self.spool.len()
    }

    /// Applies a processing outcome: removes the spool entry and makes the listed
    /// changes, as one batch. Returns the inbox sequence number of a forwarded message.
    pub fn complete(&self, spooled: Seq, effects: &Effects) -> Result<Option<Seq>, StoreError> {
        let mut b = Batch::new();
        b.remove(&self.spool, spooled.bytes());
        let seq = self.effects_batch(&mut b, effects)?;
        self.apply(b)?;
        Ok(seq)
    }

    fn effects_batch(&self, b: &mut Batch, effects: &Effects) -> Result<Option<Seq>, StoreError> {
        use super::area::{pair_key, texted_key};
        if let Some((account, number)) = &effects.texted {
            b.insert(
                &self.texted,
                texted_key(account, number.as_str(), effects.now),
                Vec::new(),
            );
        }
        let seq = match &effects.forward {
            Some(msg) => {
                let seq = Seq(self.next_id()?);
                b.insert(&self.inbox, seq.bytes(), enc(msg));
                Some(seq)
            }
            None => None,
        };
        for r in &effects.expire_pairing {
            b.remove(&self.pairing, pair_key(&r.account, &r.code));
        }
        if let Some(r) = &effects.new_pairing {
            b.insert(&self.pairing, pair_key(&r.account, &r.code), enc(r));
        }
        match &effects.opt {
            Some((account, number, true)) => b.insert(
                &self.optout,
                pair_key(account, number.as_str()),
                &effects.now.to_be_bytes()[..],
            ),
            Some((account, number, false)) => {
                b.remove(&self.optout, pair_key(account, number.as_str()))
            }
            None => {}
        }
        if let Some((account, address)) = &effects.whatsapp_seen {
            self.whatsapp_seen_into(b, account, address, effects.now);
            for id in &effects.whatsapp_released {
                self.unhold_whatsapp_into(b, account, address, *id);
            }
        }
        self.enqueue_into(b, &effects.outbound);
        if let Some(rec) = &effects.decided {
            self.decide_into(b, rec)?;
        }
        if let Some((account, number, id)) = &effects.conversation {
            b.insert(
                &self.conversations,
                pair_key(account, number.as_str()),
                super::access::encode_conversation(id, effects.conversation_texted_at),
            );
        }
        Ok(seq)
    }
}
