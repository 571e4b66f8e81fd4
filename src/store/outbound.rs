//! The outbound queue: sends waiting for their (next) attempt, in flight, and those
//! that ended unknown or failed (kept for `queue list` until requeued or purged). A
//! sent message is removed.

use super::area::{Batch, Seq};
use super::{dec, enc, OutboundRecord, OutboundState, Purpose, Store, StoreError};
use crate::phone::E164;

impl Store {
    /// Adds `records` to `b` (a reply's parts go in the batch of its ack).
    pub(crate) fn enqueue_into(&self, b: &mut Batch, records: &[OutboundRecord]) {
        for r in records {
            b.insert(&self.outbound, r.id.to_be_bytes(), enc(r));
        }
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

    /// Every record, in id order; records that do not decode are quarantined.
    pub fn outbound(&self) -> Result<Vec<OutboundRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.outbound.iter() {
            let (k, v) = item?;
            match dec::<OutboundRecord>(&v) {
                Ok(r) => out.push(r),
                Err(e) => self.quarantine(&self.outbound, &k, &e),
            }
        }
        Ok(out)
    }

    pub fn outbound_record(&self, id: u64) -> Result<Option<OutboundRecord>, StoreError> {
        match self.outbound.get(Seq(id).bytes())? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    pub fn outbound_len(&self) -> usize {
        self.outbound.len()
    }

    pub fn put_outbound(&self, r: &OutboundRecord) -> Result<(), StoreError> {
        let mut b = Batch::new();
        b.insert(&self.outbound, r.id.to_be_bytes(), enc(r));
        self.apply(b)
    }

    pub fn remove_outbound(&self, id: u64) -> Result<(), StoreError> {
        let mut b = Batch::new();
        b.remove(&self.outbound, id.to_be_bytes());
        self.apply(b)
    }

    /// After a crash, a send that was in flight may or may not have reached Twilio.
    pub fn mark_interrupted_sends_unknown(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut b = Batch::new();
        for mut r in self.outbound()? {
            if r.state == OutboundState::Sending {
                r.state = OutboundState::Unknown;
                r.last_error = Some("the daemon stopped while this send was in flight; it may or may not have been sent".into());
                b.insert(&self.outbound, r.id.to_be_bytes(), enc(&r));
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
        }
    }
}
