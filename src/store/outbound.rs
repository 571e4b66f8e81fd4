//! The outbound queue: sends waiting for their (next) attempt, in flight, or of unknown
//! outcome waiting for a lookup (area `o`), and, in their own area (`f`), those that
//! failed for good, kept for `queue list` until requeued or purged. A sent message is
//! removed.

use super::area::{Batch, Seq};
use super::{dec, enc, OutboundRecord, OutboundState, Purpose, Store, StoreError};
use crate::phone::E164;

impl Store {
    /// Adds `records` to `b` (a reply's parts go in the batch of its ack).
    pub(crate) fn enqueue_into(&self, b: &mut Batch, records: &[OutboundRecord]) {
        for r in records {
            self.put_into(b, r);
        }
    }

    /// Writes `r` to the area its state belongs in, and out of the other.
    fn put_into(&self, b: &mut Batch, r: &OutboundRecord) {
        let key = Seq(r.id).bytes();
        let (to, from) = match r.state {
            // Unknown sends are still the sender's: it asks Twilio about them.
            OutboundState::Queued
            | OutboundState::Sending
            | OutboundState::Unknown
            | OutboundState::Checking
            | OutboundState::Held => (&self.outbound, &self.finished),
            OutboundState::Failed => (&self.finished, &self.outbound),
        };
        b.remove(from, key);
        b.insert(to, key, enc(r));
    }

    pub fn enqueue(&self, records: &[OutboundRecord]) -> Result<(), StoreError> {
        let mut b = Batch::new();
        self.enqueue_into(&mut b, records);
        self.apply(b)
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

    fn records_in(&self, area: &super::area::Area) -> Result<Vec<OutboundRecord>, StoreError> {
        let mut out = Vec::new();
        for item in area.iter() {
            let (k, v) = item?;
            match dec::<OutboundRecord>(&v) {
                Ok(r) => out.push(r),
                Err(e) => self.quarantine(area, &k, &e),
            }
        }
        Ok(out)
    }

    /// Sends waiting or in flight, in id order (what the sender loads); records that do
    /// not decode are quarantined.
    pub fn live_outbound(&self) -> Result<Vec<OutboundRecord>, StoreError> {
        self.records_in(&self.outbound)
    }

    /// Every record, live and finished, in id order.
    pub fn outbound(&self) -> Result<Vec<OutboundRecord>, StoreError> {
        let mut all = self.records_in(&self.outbound)?;
        all.extend(self.records_in(&self.finished)?);
        all.sort_by_key(|r| r.id);
        Ok(all)
    }

    pub fn outbound_len(&self) -> usize {
        self.outbound.len() + self.finished.len()
    }

    pub fn put_outbound(&self, r: &OutboundRecord) -> Result<(), StoreError> {
        let mut b = Batch::new();
        self.put_into(&mut b, r);
        self.apply(b)
    }

    /// A send went out: it leaves the queue and, in the same batch, joins the log the
    /// spending limits count, and its SID (when Twilio's answer gave one) becomes ours
    /// (a status record, `status` as Twilio answered, see [`super::StatusRecord`]).
    ///
    /// The send joins that log only when `counted` (some `outboundLimits` key of its
    /// account is set). With every limit 0 nothing is logged: a key per send would make
    /// sled's page table, which it keeps in memory for every page of the store, grow
    /// with the day's volume (issue 20 item 6); a limit set later counts from then on.
    pub fn complete_send(
        &self,
        r: &OutboundRecord,
        segments: u32,
        at_ms: u64,
        sid: Option<(&str, &str)>,
        counted: bool,
    ) -> Result<(), StoreError> {
        let mut b = Batch::new();
        if let Some((sid, status)) = sid {
            self.note_sent_into(&mut b, sid, status, at_ms)?;
        }
        if !r.media_urls.is_empty() {
            self.media_accepted_into(&mut b, r, at_ms, sid.map(|(s, _)| s))?;
        }
        b.remove(&self.outbound, Seq(r.id).bytes());
        b.remove(&self.finished, Seq(r.id).bytes());
        if counted {
            self.log_sent_into(&mut b, &r.account, at_ms, r.to.as_str(), segments)?;
        }
        self.apply(b)
    }

    pub fn remove_outbound(&self, id: u64) -> Result<(), StoreError> {
        let mut b = Batch::new();
        b.remove(&self.outbound, Seq(id).bytes());
        b.remove(&self.finished, Seq(id).bytes());
        self.apply(b)
    }

    /// After a crash, a send that was in flight may or may not have reached Twilio.
    pub fn mark_interrupted_sends_unknown(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut b = Batch::new();
        for mut r in self.live_outbound()? {
            if r.state == OutboundState::Sending {
                r.state = OutboundState::Unknown;
                let attempt = r.attempted_at_ms.unwrap_or(r.created_ms);
                r.attempted_at_ms = Some(attempt);
                r.next_attempt_ms = crate::twilio::reconcile::first_check_at(attempt);
                r.last_error = Some("the daemon stopped while this send was in flight; it may or may not have been sent: Twilio will be asked".into());
                self.put_into(&mut b, &r);
                n += 1;
            }
        }
        self.apply(b)?;
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
            attempted_at_ms: None,
            lookup_failures: 0,
            resent: false,
            last_code: None,
            held_limit: None,
            released: false,
            content_sid: None,
            content_variables: None,
        }
    }
}
