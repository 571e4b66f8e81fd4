//! Admission: dedupe marks, the spool (admitted, not yet processed), rejected webhooks
//! and delivery statuses.

use super::area::{seen_time, seen_value, status_seen_key, Batch, Seq};
use super::{
    dec, enc, Admission, Effects, InboundRecord, RejectedRecord, StatusRecord, StatusUpdate, Store,
    StoreError,
};

impl Store {
    /// Whether a message SID was admitted (or rejected) before.
    pub fn is_seen(&self, sid: &str) -> Result<bool, StoreError> {
        self.seen.contains_key(sid.as_bytes())
    }

    /// Admits a message and applies what processing it decided, as one batch: its
    /// dedupe mark and its effects (inbox entry, pairing request, texts) together.
    /// Writer only; the caller checked [`Store::is_seen`] on the writer thread.
    /// Returns the inbox sequence number when the message went to the agent.
    pub(crate) fn admit_processed(
        &self,
        sid: &str,
        received_at_ms: u64,
        effects: &Effects,
    ) -> Result<Option<Seq>, StoreError> {
        let mut b = Batch::new();
        let route = effects
            .forward
            .as_ref()
            .map(|m| (m.account.as_str(), m.from.as_str()));
        b.insert(
            &self.seen,
            sid.as_bytes(),
            seen_value(received_at_ms, route),
        );
        let seq = self.effects_batch(&mut b, effects)?;
        self.apply(b)?;
        Ok(seq)
    }

    /// Records `record` in the spool unless its SID was seen before (the path for
    /// processing later; the daemon processes at admission instead).
    pub fn admit(&self, record: &InboundRecord) -> Result<Admission, StoreError> {
        if self.is_seen(&record.sid)? {
            return Ok(Admission::Duplicate);
        }
        let seq = Seq(self.next_id()?);
        let mut b = Batch::new();
        b.insert(
            &self.seen,
            record.sid.as_bytes(),
            &record.received_at_ms.to_be_bytes()[..],
        );
        b.insert(&self.spool, seq.bytes(), enc(record));
        self.apply(b)?;
        Ok(Admission::Admitted)
    }

    /// Keeps a webhook that must never be processed, deduplicated like admissions.
    pub fn admit_rejected(&self, record: &RejectedRecord) -> Result<Admission, StoreError> {
        if self.is_seen(&record.sid)? {
            return Ok(Admission::Duplicate);
        }
        let seq = Seq(self.next_id()?);
        let mut b = Batch::new();
        b.insert(
            &self.seen,
            record.sid.as_bytes(),
            &record.received_at_ms.to_be_bytes()[..],
        );
        b.insert(&self.rejected, seq.bytes(), enc(record));
        self.apply(b)?;
        Ok(Admission::Admitted)
    }

    pub fn rejected(&self) -> Result<Vec<RejectedRecord>, StoreError> {
        self.rejected.iter().map(|item| dec(&item?.1)).collect()
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
        let dedupe = status_seen_key(sid, status);
        if self.seen.contains_key(&dedupe)? {
            return Ok(StatusUpdate::Duplicate);
        }
        let mut b = Batch::new();
        b.insert(&self.seen, &dedupe, &now.to_be_bytes()[..]);
        let current = self.delivery_status(sid)?;
        let update = if crate::twilio::status_may_replace(current.as_deref(), status) {
            let rec = StatusRecord {
                status: status.to_string(),
                error_code: error_code.map(str::to_string),
                at: now,
            };
            b.insert(&self.status, sid.as_bytes(), enc(&rec));
            StatusUpdate::Applied
        } else {
            StatusUpdate::Stale
        };
        self.apply(b)?;
        Ok(update)
    }

    pub fn delivery_status(&self, sid: &str) -> Result<Option<String>, StoreError> {
        match self.status.get(sid.as_bytes())? {
            // An unreadable status record counts as none: a newer callback replaces it.
            Some(v) => Ok(dec::<StatusRecord>(&v).ok().map(|r| r.status)),
            None => Ok(None),
        }
    }

    /// Forgets dedupe keys older than `max_age_ms` (at least a day is kept: Twilio
    /// retries within minutes, but operators replay from the console later). Writer
    /// only; removes in bounded batches.
    pub fn prune_seen(&self, now: u64, max_age_ms: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut b = Batch::new();
        for item in self.seen.iter() {
            let (k, v) = item?;
            let at = seen_time(&v).unwrap_or(0);
            if now.saturating_sub(at) > max_age_ms {
                b.remove(&self.seen, &k);
                n += 1;
                if n % 10_000 == 0 {
                    self.apply_now(std::mem::replace(&mut b, Batch::new()))?;
                }
            }
        }
        // At once, not with the writer's round: a big prune would otherwise hold every
        // removal in memory. Safe early: it only removes keys older than a day, which
        // nothing pending in the round writes.
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
        self.enqueue_into(b, &effects.outbound);
        if let Some((account, number, id)) = &effects.conversation {
            b.insert(
                &self.conversations,
                pair_key(account, number.as_str()),
                id.as_bytes(),
            );
        }
        Ok(seq)
    }
}
