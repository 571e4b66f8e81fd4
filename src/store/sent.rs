//! The sent log the spending limits count (area [`Tag::SentMinutes`]): one record per
//! account and minute, `account \0 minute (u64 BE, minutes since the epoch)` →
//! recipients and their segments that minute, in the bucket codec of
//! [`super::dedupe`] (`recipient → segments (u32 BE)`).
//!
//! Why: one sled key per send made sled's page table, which it keeps in memory for
//! every page of the store, grow with the day's sends (issue 20 item 6). Per minute
//! the key count is bounded by 1,440 a day per account, whatever the volume. The
//! limits count per minute anyway ([`crate::limits::SendWindow`]), so nothing is lost
//! by it. Stores written before keep one key per send under [`Tag::SentLog`];
//! [`Store::migrate_sent_log`] moves them at open.

use super::area::{account_prefix, handles, Batch, Tag};
use super::dedupe;
use super::{Store, StoreError};

const MINUTE_MS: u64 = 60_000;

/// The key of `account`'s record for the minute holding `at_ms`.
pub(crate) fn key(account: &str, at_ms: u64) -> Vec<u8> {
    let mut k = account_prefix(account);
    k.extend_from_slice(&(at_ms / MINUTE_MS).to_be_bytes());
    k
}

/// The account and the minute's first millisecond of a [`key`].
pub fn key_parts(k: &[u8]) -> Option<(&str, u64)> {
    let zero = k.iter().position(|&b| b == 0)?;
    let account = std::str::from_utf8(&k[..zero]).ok()?;
    let minute: [u8; 8] = k.get(zero + 1..)?.try_into().ok()?;
    Some((account, u64::from_be_bytes(minute).checked_mul(MINUTE_MS)?))
}

/// `record` with `segments` more for `to`.
pub(crate) fn add(record: &[u8], to: &str, segments: u32) -> Result<Vec<u8>, dedupe::EncodeError> {
    let had = dedupe::find(record, to.as_bytes())
        .map_err(dedupe::EncodeError::Corrupt)?
        .map_or(0, segments_of);
    dedupe::with(
        record,
        to.as_bytes(),
        &had.saturating_add(segments).to_be_bytes(),
    )
}

fn segments_of(v: &[u8]) -> u32 {
    v.try_into().map(u32::from_be_bytes).unwrap_or(0)
}

/// A record's (recipient, segments), up to the first entry that does not decode.
pub fn entries(record: &[u8]) -> impl Iterator<Item = (&str, u32)> {
    dedupe::iter(record)
        .map_while(Result::ok)
        .filter_map(|(to, n)| Some((std::str::from_utf8(to).ok()?, segments_of(n))))
}

impl Store {
    /// Adds to `b` a send of `segments` to `to` at `at_ms` in `account`'s sent log.
    pub(crate) fn log_sent_into(
        &self,
        b: &mut Batch,
        account: &str,
        at_ms: u64,
        to: &str,
        segments: u32,
    ) -> Result<(), StoreError> {
        let k = key(account, at_ms);
        let current = match b.latest(&self.sent_log, &k) {
            Some(v) => v.cloned(),
            None => self.sent_log.get(&k)?,
        };
        let base = current.as_deref().unwrap_or_default();
        let record = match add(base, to, segments) {
            Ok(r) => r,
            Err(_) => {
                tracing::error!("a sent-log record does not decode; kept its raw bytes in the quarantine area and the entries before the bad one");
                b.insert(&self.quarantine, self.sent_log.full_key(&k), base.to_vec());
                add(&dedupe::salvage(base), to, segments)
                    .map_err(|_| StoreError::Decode("recipient too long".into()))?
            }
        };
        b.insert(&self.sent_log, k, record);
        Ok(())
    }

    /// Calls `f(time, recipient, segments)` for `account`'s sends in the sent log of
    /// the last `max_age_ms` (every minute of which some part is in it), oldest minute
    /// first; `time` is the minute's first millisecond. Streams: the spending limits
    /// rebuild per-minute summaries from it.
    pub fn for_each_sent(
        &self,
        account: &str,
        now: u64,
        max_age_ms: u64,
        mut f: impl FnMut(u64, &str, u32),
    ) -> Result<(), StoreError> {
        let since = now.saturating_sub(max_age_ms);
        let from = key(account, since);
        let prefix = account_prefix(account);
        for item in self.sent_log.scan(&prefix) {
            let (k, v) = item?;
            if k.as_ref() < from.as_slice() {
                continue;
            }
            let Some((_, at)) = key_parts(&k) else {
                continue;
            };
            for (to, n) in entries(&v) {
                f(at, to, n);
            }
        }
        Ok(())
    }

    /// Drops the minutes wholly older than `max_age_ms` (and records whose key does not
    /// parse).
    pub fn prune_sent_log(&self, now: u64, max_age_ms: u64) -> Result<(), StoreError> {
        let mut b = Batch::new();
        for item in self.sent_log.iter() {
            let (k, _) = item?;
            let old = key_parts(&k)
                .is_none_or(|(_, at)| now.saturating_sub(at + MINUTE_MS - 1) > max_age_ms);
            if old {
                b.remove(&self.sent_log, &k);
            }
        }
        self.apply(b)
    }

    /// Moves the per-send sent log of earlier versions ([`Tag::SentLog`], keys
    /// `account \0 time id` in time order) into per-minute records, at open. Each
    /// minute's records are converted and removed in ONE batch (added to a record the
    /// minute may already have), so a kill at any point leaves every minute either
    /// wholly in the old form or wholly moved, and the next open goes on with the rest.
    /// Returns how many sends were moved.
    pub(crate) fn migrate_sent_log(&self, progress: &mut dyn FnMut()) -> Result<usize, StoreError> {
        const OPS_PER_BATCH: usize = 10_000;
        let h = handles(&self.cell)?;
        let legacy = [Tag::SentLog as u8];
        if h.data.scan_prefix(legacy).next().is_none() {
            return Ok(0);
        }
        tracing::info!("moving the sent log into per-minute records (once, after an upgrade)");
        let mut moved = 0;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        // The minute being gathered: its new key, its record, the old keys in it.
        let mut current: Option<(Vec<u8>, Vec<u8>, Vec<sled::IVec>)> = None;
        let mut finish = |cur: Option<(Vec<u8>, Vec<u8>, Vec<sled::IVec>)>,
                          batch: &mut sled::Batch,
                          in_batch: &mut usize|
         -> Result<(), StoreError> {
            let Some((k, record, old)) = cur else {
                return Ok(());
            };
            *in_batch += old.len() + 1;
            old.into_iter().for_each(|o| batch.remove(o));
            batch.insert(self.sent_log.full_key(&k), record);
            if *in_batch >= OPS_PER_BATCH {
                progress();
                h.data.apply_batch(std::mem::take(batch))?;
                *in_batch = 0;
            }
            Ok(())
        };
        for item in h.data.scan_prefix(legacy) {
            let (old_key, v) = item?;
            moved += 1;
            let parsed = super::area::sent_key_parts(&old_key[1..]);
            let sent = super::dec::<(String, u32)>(&v).ok();
            let (Some((account, at)), Some((to, segments))) = (parsed, sent) else {
                // Unreadable: nothing to count; it goes with the next minute's batch.
                batch.remove(old_key);
                in_batch += 1;
                continue;
            };
            let k = key(&account, at);
            if current.as_ref().is_none_or(|(ck, _, _)| *ck != k) {
                finish(current.take(), &mut batch, &mut in_batch)?;
                let stored = h.data.get(self.sent_log.full_key(&k))?;
                let record = stored.map(|s| dedupe::salvage(&s)).unwrap_or_default();
                current = Some((k, record, Vec::new()));
            }
            if let Some((_, record, old)) = current.as_mut() {
                if let Ok(next) = add(record, &to, segments) {
                    *record = next;
                }
                old.push(old_key);
            }
        }
        finish(current.take(), &mut batch, &mut in_batch)?;
        h.data.apply_batch(batch)?;
        h.db.flush()?;
        tracing::info!(sends = moved, "moved the sent log into per-minute records");
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_records() {
        let k = key("acc", 125_000);
        assert_eq!(key_parts(&k), Some(("acc", 120_000)));
        assert_eq!(key("acc", 120_000), key("acc", 179_999), "one minute");
        assert!(key("acc", 1) < key("acc", 60_000), "time order");
        assert!(key("a", 1).starts_with(&account_prefix("a")));
        assert!(!key("ab", 1).starts_with(&account_prefix("a")));
        assert_eq!(key_parts(b"no zero"), None);
        assert_eq!(key_parts(b"acc\0short"), None);
        let r = add(&[], "+1555", 2).expect("add");
        let r = add(&r, "+1666", 1).expect("add");
        let r = add(&r, "+1555", 3).expect("add");
        assert_eq!(
            entries(&r).collect::<Vec<_>>(),
            [("+1555", 5), ("+1666", 1)]
        );
        assert!(
            add(&[0xff], "+1", 1).is_err(),
            "a corrupt record is an error"
        );
    }

    proptest::proptest! {
        /// Records and keys are bytes from disk: any bytes decode without a panic.
        #[test]
        fn any_bytes_decode_without_panic(junk in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = entries(&junk).count();
            let _ = key_parts(&junk);
            let _ = add(&junk, "+1555", 1);
        }
    }
}
