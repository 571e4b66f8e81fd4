//! WhatsApp's 24-hour window in the store (CONTRACT §12). Area `w`: each WhatsApp
//! sender's last inbound time (account \0 address → ms, big-endian), written in the
//! batch that admits their message. Area `W`: texts held because they fell outside the
//! window (account \0 address \0 id, big-endian → the send's [`OutboundRecord`]),
//! written in the batch that takes them out of the outbound queue, and put back into
//! it (same id) in the batch that admits the person's next message: a held text is
//! never lost and never doubled, across a crash too.

use super::area::{pair_key, Batch, Seq};
use super::{dec, enc, OutboundRecord, Store, StoreError};
use crate::phone::E164;

/// `account \0 address \0`: the prefix of one sender's held texts.
fn held_prefix(account: &str, address: &E164) -> Vec<u8> {
    let mut k = pair_key(account, address.as_str());
    k.push(0);
    k
}

fn held_key(account: &str, address: &E164, id: u64) -> Vec<u8> {
    let mut k = held_prefix(account, address);
    k.extend_from_slice(&Seq(id).bytes());
    k
}

impl Store {
    /// When this WhatsApp sender last wrote to the account, if ever.
    pub fn whatsapp_last_inbound(
        &self,
        account: &str,
        address: &E164,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self
            .whatsapp_seen
            .get(pair_key(account, address.as_str()))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    pub(crate) fn whatsapp_seen_into(&self, b: &mut Batch, account: &str, address: &E164, at: u64) {
        b.insert(
            &self.whatsapp_seen,
            pair_key(account, address.as_str()),
            &at.to_be_bytes()[..],
        );
    }

    /// The texts held for this sender until they write again, oldest first; records
    /// that do not decode are quarantined.
    pub fn whatsapp_held(
        &self,
        account: &str,
        address: &E164,
    ) -> Result<Vec<OutboundRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.whatsapp_holds.scan(&held_prefix(account, address)) {
            let (k, v) = item?;
            match dec::<OutboundRecord>(&v) {
                Ok(r) => out.push(r),
                Err(e) => self.quarantine(&self.whatsapp_holds, &k, &e),
            }
        }
        Ok(out)
    }

    /// The sender wrote again: their held texts as they go back into the queue (same
    /// id, due `now`), oldest first. The caller puts them in the admission's batch with
    /// their ids, which leave `W` there ([`Store::unhold_whatsapp_into`]).
    pub(crate) fn whatsapp_released(
        &self,
        account: &str,
        address: &E164,
        now: u64,
    ) -> Result<Vec<OutboundRecord>, StoreError> {
        let mut held = self.whatsapp_held(account, address)?;
        for r in &mut held {
            r.state = super::OutboundState::Queued;
            r.next_attempt_ms = now;
            r.last_error = None;
        }
        Ok(held)
    }

    /// Whether a text is held for this sender (a re-engagement template went already).
    pub fn whatsapp_holding(&self, account: &str, address: &E164) -> Result<bool, StoreError> {
        Ok(self
            .whatsapp_holds
            .scan(&held_prefix(account, address))
            .next()
            .transpose()?
            .is_some())
    }

    /// How many texts are held for the account's WhatsApp senders, counted up to `cap`
    /// (for `outboundLimits.maxHeld`: no need to count past it).
    pub(crate) fn whatsapp_held_count(
        &self,
        account: &str,
        cap: usize,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self
            .whatsapp_holds
            .scan(&super::area::account_prefix(account))
            .take(cap)
        {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Every held text, of every account (for `queue list`).
    pub fn whatsapp_held_all(&self) -> Result<Vec<OutboundRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.whatsapp_holds.iter() {
            let (k, v) = item?;
            match dec::<OutboundRecord>(&v) {
                Ok(r) => out.push(r),
                Err(e) => self.quarantine(&self.whatsapp_holds, &k, &e),
            }
        }
        Ok(out)
    }

    /// Moves `rec` out of the outbound queue into the held texts, and queues
    /// `template` (the re-engagement template), in one batch.
    pub fn hold_whatsapp(
        &self,
        rec: &OutboundRecord,
        template: Option<&OutboundRecord>,
    ) -> Result<(), StoreError> {
        let mut b = Batch::new();
        b.remove(&self.outbound, Seq(rec.id).bytes());
        b.remove(&self.finished, Seq(rec.id).bytes());
        b.insert(
            &self.whatsapp_holds,
            held_key(&rec.account, &rec.to, rec.id),
            enc(rec),
        );
        if let Some(t) = template {
            self.enqueue_into(&mut b, std::slice::from_ref(t));
        }
        self.apply(b)
    }

    /// Takes a held text out of `W` (the caller queues it in the same batch).
    pub(crate) fn unhold_whatsapp_into(
        &self,
        b: &mut Batch,
        account: &str,
        address: &E164,
        id: u64,
    ) {
        b.remove(&self.whatsapp_holds, held_key(account, address, id));
    }
}
