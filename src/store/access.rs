//! Access state: pairing requests, approved senders, opt-outs and the pairing-text
//! history that the SMS budget counts.

use super::area::{account_prefix, pair_key, texted_time, Batch};
use super::{dec, enc, ApprovedSender, OutboundRecord, Purpose, Store, StoreError};
use crate::access::pairing::{normalize_code, PairingRequest};
use crate::phone::E164;

impl Store {
    pub fn is_approved(&self, account: &str, number: &E164) -> Result<bool, StoreError> {
        self.approved
            .contains_key(pair_key(account, number.as_str()))
    }

    /// The sender's current conversation id, if they have one.
    pub fn conversation(&self, account: &str, number: &E164) -> Result<Option<String>, StoreError> {
        Ok(self.conversation_record(account, number)?.map(|(id, _)| id))
    }

    /// The sender's conversation id and when their last `/new` confirmation was texted
    /// (if one was since this field exists): the value is the id, then optionally
    /// `\0` and the time (8 bytes, big-endian).
    pub fn conversation_record(
        &self,
        account: &str,
        number: &E164,
    ) -> Result<Option<(String, Option<u64>)>, StoreError> {
        Ok(self
            .conversations
            .get(pair_key(account, number.as_str()))?
            .map(|v| decode_conversation(&v)))
    }

    pub fn is_opted_out(&self, account: &str, number: &E164) -> Result<bool, StoreError> {
        self.optout.contains_key(pair_key(account, number.as_str()))
    }

    pub fn set_opted_out(&self, account: &str, number: &E164, now: u64) -> Result<(), StoreError> {
        let mut b = Batch::new();
        b.insert(
            &self.optout,
            pair_key(account, number.as_str()),
            &now.to_be_bytes()[..],
        );
        self.apply(b)
    }

    /// Every pairing request of an account, expired ones included.
    pub fn pairing_requests(&self, account: &str) -> Result<Vec<PairingRequest>, StoreError> {
        self.pairing
            .scan(&account_prefix(account))
            .map(|item| dec(&item?.1))
            .collect()
    }

    /// Unexpired requests of every account, oldest first.
    pub fn pending_pairings(&self, now: u64) -> Result<Vec<PairingRequest>, StoreError> {
        let mut all: Vec<PairingRequest> = self
            .pairing
            .iter()
            .map(|item| dec(&item?.1))
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
    /// opted out, `notice` is queued to them. One batch.
    pub fn approve_pairing(
        &self,
        code: &str,
        now: u64,
        notice: impl Fn(&str) -> String,
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
        let mut b = Batch::new();
        b.remove(&self.pairing, pair_key(&req.account, &req.code));
        b.insert(
            &self.approved,
            pair_key(&req.account, req.sender.as_str()),
            enc(&approved),
        );
        if !opted_out {
            let out = OutboundRecord::new(
                self.next_id()?,
                &req.account,
                req.sender.clone(),
                notice(&req.account),
                Purpose::PairingApproved,
                now,
            );
            self.enqueue_into(&mut b, std::slice::from_ref(&out));
        }
        self.apply(b)?;
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
        let mut b = Batch::new();
        b.remove(&self.pairing, pair_key(&req.account, &req.code));
        self.apply(b)?;
        Ok(Some(req))
    }

    pub fn approved_senders(
        &self,
        account: Option<&str>,
    ) -> Result<Vec<ApprovedSender>, StoreError> {
        let iter = match account {
            Some(a) => self.approved.scan(&account_prefix(a)),
            None => self.approved.iter(),
        };
        iter.map(|item| dec(&item?.1)).collect()
    }

    pub fn approve_sender(&self, account: &str, number: &E164, now: u64) -> Result<(), StoreError> {
        let rec = ApprovedSender {
            number: number.clone(),
            account: account.to_string(),
            approved_at_ms: now,
        };
        let mut b = Batch::new();
        b.insert(
            &self.approved,
            pair_key(account, number.as_str()),
            enc(&rec),
        );
        self.apply(b)
    }

    pub fn revoke_sender(&self, account: &str, number: &E164) -> Result<bool, StoreError> {
        let key = pair_key(account, number.as_str());
        if !self.approved.contains_key(&key)? {
            return Ok(false);
        }
        let mut b = Batch::new();
        b.remove(&self.approved, key);
        self.apply(b)?;
        Ok(true)
    }

    /// When pairing texts went to `number` and to anyone on `account` (ms).
    pub fn pairing_text_history(
        &self,
        account: &str,
        number: &E164,
    ) -> Result<(Vec<u64>, Vec<u64>), StoreError> {
        let mut to_sender = Vec::new();
        let mut to_account = Vec::new();
        let mine = pair_key(account, number.as_str());
        for item in self.texted.scan(&account_prefix(account)) {
            let (key, _) = item?;
            let Some(ts) = texted_time(&key) else {
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
        let mut b = Batch::new();
        for item in self.texted.iter() {
            let (key, _) = item?;
            let ts = texted_time(&key).unwrap_or(0);
            if now.saturating_sub(ts) > max_age_ms {
                b.remove(&self.texted, &key);
            }
        }
        self.apply(b)
    }
}

/// A conversation value: the id, and the time of the last `/new` confirmation.
pub(crate) fn encode_conversation(id: &str, texted_at: Option<u64>) -> Vec<u8> {
    let mut v = id.as_bytes().to_vec();
    if let Some(at) = texted_at {
        v.push(0);
        v.extend_from_slice(&at.to_be_bytes());
    }
    v
}

/// The inverse of [`encode_conversation`]; a value of an earlier version is the id
/// alone.
pub(crate) fn decode_conversation(v: &[u8]) -> (String, Option<u64>) {
    match v.iter().position(|b| *b == 0) {
        Some(i) => {
            let at = v
                .get(i + 1..)
                .and_then(|t| <[u8; 8]>::try_from(t).ok())
                .map(u64::from_be_bytes);
            (String::from_utf8_lossy(&v[..i]).into_owned(), at)
        }
        None => (String::from_utf8_lossy(v).into_owned(), None),
    }
}
