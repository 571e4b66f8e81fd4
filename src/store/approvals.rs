//! The agent's asks (CONTRACT §9): pending in area `E` (account \0 code), decided in
//! area `e` (account \0 decided-at code), the audit `smsgate approvals list` shows.
//! A decision moves a record from one to the other in one batch; the audit keeps the
//! last [`KEEP_DECIDED`] per account, none older than [`KEEP_DECIDED_MS`].

use serde::{Deserialize, Serialize};

use super::area::{account_prefix, pair_key, Batch};
use super::{dec, enc, Store, StoreError};

/// Decided asks kept per account.
pub(crate) const KEEP_DECIDED: usize = 100;
/// How long a decided ask is kept.
pub(crate) const KEEP_DECIDED_MS: u64 = 30 * 24 * 3600 * 1000;

/// One ask of the agent, pending or decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AskRecord {
    pub code: String,
    pub account: String,
    /// The asking connection (of this run of the daemon: at start every pending ask is
    /// cancelled, the connections it belonged to are gone).
    pub conn: u64,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub conversation: Option<String>,
    pub title: String,
    pub detail: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// `allow_once`, `allow_always`, `deny`, `timeout`, `cancelled`; `None` while pending.
    #[serde(default)]
    pub decision: Option<String>,
    /// The approver who answered (a full number; shown redacted).
    #[serde(default)]
    pub by: Option<String>,
    #[serde(default)]
    pub decided_at_ms: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

fn decided_key(account: &str, at_ms: u64, code: &str) -> Vec<u8> {
    let mut k = account_prefix(account);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(code.as_bytes());
    k
}

impl Store {
    /// Pending asks, of one account or of all, oldest first.
    pub fn pending_asks(&self, account: Option<&str>) -> Result<Vec<AskRecord>, StoreError> {
        let prefix = account.map(account_prefix).unwrap_or_default();
        let mut all: Vec<AskRecord> = self
            .asks
            .scan(&prefix)
            .map(|item| dec(&item?.1))
            .collect::<Result<_, _>>()?;
        all.sort_by_key(|r| r.created_at_ms);
        Ok(all)
    }

    pub fn pending_ask(&self, account: &str, code: &str) -> Result<Option<AskRecord>, StoreError> {
        self.asks
            .get(pair_key(account, code))?
            .map(|v| dec(&v))
            .transpose()
    }

    /// Decided asks, of one account or of all, newest first.
    pub fn decided_asks(&self, account: Option<&str>) -> Result<Vec<AskRecord>, StoreError> {
        let prefix = account.map(account_prefix).unwrap_or_default();
        let mut all: Vec<AskRecord> = self
            .decided
            .scan(&prefix)
            .map(|item| dec(&item?.1))
            .collect::<Result<_, _>>()?;
        all.sort_by_key(|r| std::cmp::Reverse(r.decided_at_ms));
        Ok(all)
    }

    /// The decided ask of `account` with `code`, if the audit still has it.
    pub fn decided_ask(&self, account: &str, code: &str) -> Result<Option<AskRecord>, StoreError> {
        Ok(self
            .decided_asks(Some(account))?
            .into_iter()
            .find(|r| r.code == code))
    }

    /// Stores a new pending ask into `b`.
    pub(crate) fn ask_into(&self, b: &mut Batch, rec: &AskRecord) {
        b.insert(&self.asks, pair_key(&rec.account, &rec.code), enc(rec));
    }

    /// Moves `rec` (with its decision) from the pending asks to the audit, and prunes
    /// the account's audit to its last [`KEEP_DECIDED`] within [`KEEP_DECIDED_MS`].
    pub(crate) fn decide_into(&self, b: &mut Batch, rec: &AskRecord) -> Result<(), StoreError> {
        let at = rec.decided_at_ms.unwrap_or(rec.created_at_ms);
        b.remove(&self.asks, pair_key(&rec.account, &rec.code));
        b.insert(
            &self.decided,
            decided_key(&rec.account, at, &rec.code),
            enc(rec),
        );
        let keys: Vec<sled::IVec> = self
            .decided
            .scan(&account_prefix(&rec.account))
            .filter_map(Result::ok)
            .map(|(k, _)| k)
            .collect();
        // Keys are in time order (big-endian times after the account prefix); the new
        // one is not in the scan yet, so keep KEEP_DECIDED - 1 of these.
        let prefix_len = rec.account.len() + 1;
        let excess = (keys.len() + 1).saturating_sub(KEEP_DECIDED);
        for (i, k) in keys.iter().enumerate() {
            let t = k
                .get(prefix_len..prefix_len + 8)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map_or(0, u64::from_be_bytes);
            if i < excess || at.saturating_sub(t) > KEEP_DECIDED_MS {
                b.remove(&self.decided, k);
            }
        }
        Ok(())
    }

    /// Stores a new pending ask (its own batch).
    pub fn put_ask(&self, rec: &AskRecord) -> Result<(), StoreError> {
        let mut b = Batch::new();
        self.ask_into(&mut b, rec);
        self.apply(b)
    }

    /// Stores a new pending ask and the texts to its approvers, one batch.
    pub fn put_ask_with(
        &self,
        rec: &AskRecord,
        texts: &[super::OutboundRecord],
    ) -> Result<(), StoreError> {
        let mut b = Batch::new();
        self.ask_into(&mut b, rec);
        self.enqueue_into(&mut b, texts);
        self.apply(b)
    }

    /// Decides `rec` and queues `texts` (to the approvers), one batch.
    pub fn decide_with(
        &self,
        rec: &AskRecord,
        texts: &[super::OutboundRecord],
    ) -> Result<(), StoreError> {
        let mut b = Batch::new();
        self.decide_into(&mut b, rec)?;
        self.enqueue_into(&mut b, texts);
        self.apply(b)
    }

    /// Whose conversation `id` is on `account` (a walk of the account's senders).
    pub fn conversation_sender(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<crate::phone::E164>, StoreError> {
        let prefix = account_prefix(account);
        for item in self.conversations.scan(&prefix) {
            let (k, v) = item?;
            if super::access::decode_conversation(&v).0 == id {
                let number = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                return Ok(crate::phone::E164::parse_address(&number).ok());
            }
        }
        Ok(None)
    }

    /// Forgets decided asks older than [`KEEP_DECIDED_MS`]; returns how many.
    pub fn prune_decided(&self, now: u64) -> Result<usize, StoreError> {
        let mut b = Batch::new();
        let mut n = 0;
        for item in self.decided.iter() {
            let (k, v) = item?;
            let old = dec::<AskRecord>(&v)
                .map(|r| now.saturating_sub(r.decided_at_ms.unwrap_or(0)) > KEEP_DECIDED_MS)
                .unwrap_or(true);
            if old {
                b.remove(&self.decided, &k);
                n += 1;
            }
        }
        self.apply(b)?;
        Ok(n)
    }

    /// Codes no new ask may take: the pending ones and those in the audit, so a code
    /// is used once (an old answer sent again can never decide a new ask).
    pub fn used_codes(&self) -> Result<Vec<String>, StoreError> {
        let mut codes: Vec<String> = self
            .pending_asks(None)?
            .into_iter()
            .map(|r| r.code)
            .collect();
        codes.extend(self.decided_asks(None)?.into_iter().map(|r| r.code));
        Ok(codes)
    }

    /// Decides `rec` at once (its own batch).
    pub fn decide_ask(&self, rec: &AskRecord) -> Result<(), StoreError> {
        let mut b = Batch::new();
        self.decide_into(&mut b, rec)?;
        self.apply(b)
    }

    /// At start: every ask still pending belonged to a connection of the previous run,
    /// so it ends `cancelled` (kept in the audit). Returns how many.
    pub fn cancel_stale_asks(&self, now: u64) -> Result<usize, StoreError> {
        let stale = self.pending_asks(None)?;
        for mut rec in stale.iter().cloned() {
            rec.decision = Some("cancelled".into());
            rec.decided_at_ms = Some(now);
            rec.reason = Some("the daemon restarted; the asking connection is gone".into());
            self.decide_ask(&rec)?;
        }
        Ok(stale.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(account: &str, code: &str, at: u64) -> AskRecord {
        AskRecord {
            code: code.into(),
            account: account.into(),
            conn: 1,
            reference: Some("a1".into()),
            conversation: None,
            title: "Run".into(),
            detail: "ls".into(),
            created_at_ms: at,
            expires_at_ms: at + 1000,
            decision: None,
            by: None,
            decided_at_ms: None,
            reason: None,
        }
    }

    #[test]
    fn asks_move_to_the_audit_which_keeps_the_last_100_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let st = Store::open(dir.path()).unwrap();
            for i in 0..105u64 {
                let r = rec("a", &format!("C{i:05}"), 1_000 + i);
                st.put_ask(&r).unwrap();
                assert_eq!(st.pending_ask("a", &r.code).unwrap(), Some(r.clone()));
                let mut d = r;
                d.decision = Some("deny".into());
                d.decided_at_ms = Some(2_000 + i);
                st.decide_ask(&d).unwrap();
            }
            st.put_ask(&rec("b", "OPEN01", 5)).unwrap();
            assert!(st.pending_asks(Some("a")).unwrap().is_empty());
            let audit = st.decided_asks(Some("a")).unwrap();
            assert_eq!(audit.len(), KEEP_DECIDED);
            assert_eq!(audit[0].code, "C00104", "newest first");
            assert_eq!(audit[99].code, "C00005");
            assert!(st.decided_ask("a", "C00003").unwrap().is_none());
            st.flush().unwrap();
        }
        let st = Store::open(dir.path()).unwrap();
        assert_eq!(st.decided_asks(None).unwrap().len(), KEEP_DECIDED);
        assert_eq!(st.cancel_stale_asks(9_000).unwrap(), 1);
        assert!(st.pending_asks(None).unwrap().is_empty());
        let b = st.decided_ask("b", "OPEN01").unwrap().unwrap();
        assert_eq!(b.decision.as_deref(), Some("cancelled"));
    }

    #[test]
    fn the_audit_forgets_after_30_days() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(dir.path()).unwrap();
        let mut old = rec("a", "OLD001", 1);
        old.decision = Some("deny".into());
        old.decided_at_ms = Some(1);
        st.decide_ask(&old).unwrap();
        let mut new = rec("a", "NEW001", 2);
        new.decision = Some("deny".into());
        new.decided_at_ms = Some(KEEP_DECIDED_MS + 10);
        st.decide_ask(&new).unwrap();
        let codes: Vec<String> = st
            .decided_asks(Some("a"))
            .unwrap()
            .into_iter()
            .map(|r| r.code)
            .collect();
        assert_eq!(codes, vec!["NEW001"]);
        st.put_ask(&rec("a", "OPEN02", 3)).unwrap();
        assert_eq!(st.used_codes().unwrap(), vec!["OPEN02", "NEW001"]);
        assert_eq!(st.prune_decided(2 * KEEP_DECIDED_MS + 11).unwrap(), 1);
        assert!(st.decided_asks(None).unwrap().is_empty());
    }
}
