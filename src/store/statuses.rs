//! Delivery status records packed into buckets (area [`Tag::Statuses`]), like the
//! dedupe marks ([`super::dedupe`], whose bucket codec they share).
//!
//! Why: sled keeps an entry in memory for every page of the store, so one key per
//! outbound SID made idle RSS grow with the sends of the last 30 days (~33 B per key;
//! issue 20 item 6). In 65,536 buckets the key count is fixed: a bucket holds the
//! statuses of the SIDs that hash to it, `SID → entry`, where an entry is
//! `at (u64 BE) | status_len (u8) | status | error code (the rest; empty: none)`.
//! A lookup is one sled read, a status written one bucket rewritten.
//!
//! Stores written before keep one JSON [`StatusRecord`] per SID under [`Tag::Status`];
//! [`Store::migrate_statuses`] moves them at open.

use super::area::{handles, Batch, Tag};
use super::dedupe::{self, bucket_of};
use super::{StatusRecord, Store, StoreError};

/// A status entry that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// The bucket entry of `rec` (a status longer than 255 bytes is cut: Twilio's are
/// short words, and the callback parser bounds them).
pub(crate) fn encode(rec: &StatusRecord) -> Vec<u8> {
    let status = rec.status.as_bytes();
    let status = &status[..status.len().min(usize::from(u8::MAX))];
    let code = rec.error_code.as_deref().unwrap_or_default().as_bytes();
    let mut v = Vec::with_capacity(9 + status.len() + code.len());
    v.extend_from_slice(&rec.at.to_be_bytes());
    // Cut to at most 255 above.
    v.push(status.len() as u8);
    v.extend_from_slice(status);
    v.extend_from_slice(code);
    v
}

/// The record in a bucket entry; any bytes give a record or [`Corrupt`], never a panic.
pub(crate) fn decode(v: &[u8]) -> Result<StatusRecord, Corrupt> {
    let at = v.get(..8).ok_or(Corrupt)?;
    let at = u64::from_be_bytes(at.try_into().map_err(|_| Corrupt)?);
    let len = usize::from(*v.get(8).ok_or(Corrupt)?);
    let status = v.get(9..9 + len).ok_or(Corrupt)?;
    let code = &v[9 + len..];
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| Corrupt)
    };
    Ok(StatusRecord {
        status: text(status)?,
        error_code: if code.is_empty() {
            None
        } else {
            Some(text(code)?)
        },
        at,
    })
}

/// A bucket's (SID, record) pairs, up to the first that does not decode (for tools).
pub fn bucket_entries(bucket: &[u8]) -> impl Iterator<Item = (&[u8], StatusRecord)> {
    dedupe::iter(bucket)
        .map_while(Result::ok)
        .filter_map(|(sid, v)| Some((sid, decode(v).ok()?)))
}

/// Buckets rewritten per `apply_batch` by the prune and the migration.
const BUCKETS_PER_BATCH: usize = 1_000;

impl Store {
    /// The raw status entry of `sid` (`Some` even if it does not decode).
    pub(crate) fn status_entry(
        &self,
        b: Option<&Batch>,
        sid: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let n = bucket_of(sid.as_bytes());
        let bucket = match b.and_then(|b| b.latest(&self.statuses, &n)) {
            Some(v) => v.cloned(),
            None => self.statuses.get(n)?,
        };
        let Some(bucket) = bucket else {
            return Ok(None);
        };
        Ok(match dedupe::find(&bucket, sid.as_bytes()) {
            Ok(v) => v.map(<[u8]>::to_vec),
            Err(dedupe::Corrupt) => dedupe::find(&dedupe::salvage(&bucket), sid.as_bytes())
                .ok()
                .flatten()
                .map(<[u8]>::to_vec),
        })
    }

    /// Adds to `b` the status `rec` of `sid`: its bucket, rewritten (a bucket that does
    /// not decode keeps its raw bytes in the quarantine area and the entries before the
    /// bad one).
    pub(crate) fn status_put_into(
        &self,
        b: &mut Batch,
        sid: &str,
        rec: &StatusRecord,
    ) -> Result<(), StoreError> {
        let n = bucket_of(sid.as_bytes());
        let current = match b.latest(&self.statuses, &n) {
            Some(v) => v.cloned(),
            None => self.statuses.get(n)?,
        };
        let base = current.as_deref().unwrap_or_default();
        let entry = encode(rec);
        let bucket = match dedupe::with(base, sid.as_bytes(), &entry) {
            Ok(v) => v,
            Err(dedupe::EncodeError::Corrupt(_)) => {
                tracing::error!("a status bucket does not decode; kept its raw bytes in the quarantine area and rewrote the statuses before the bad one");
                b.insert(&self.quarantine, self.statuses.full_key(&n), base.to_vec());
                dedupe::with(&dedupe::salvage(base), sid.as_bytes(), &entry)
                    .map_err(|_| StoreError::Decode("status SID too long".into()))?
            }
            Err(dedupe::EncodeError::TooLong(_)) => {
                return Err(StoreError::Decode("status SID too long".into()))
            }
        };
        b.insert(&self.statuses, n, bucket);
        Ok(())
    }

    /// Drops delivery status records older than [`super::STATUS_RETENTION_MS`] (see
    /// [`super::status_expired`]); returns how many. A callback for a pruned SID then
    /// stores nothing, so nothing brings one back. Writes at once, bucket by bucket
    /// as stored, skipping buckets the writer's round has pending changes to (they are
    /// pruned next time), like [`Store::prune_seen`].
    pub fn prune_statuses(&self, now: u64) -> Result<usize, StoreError> {
        self.prune_buckets(
            &self.statuses,
            |entry| super::status_expired(decode(entry).ok().map(|r| r.at), now),
            |st, b, k, v| b.insert(&st.quarantine, st.statuses.full_key(k), v.to_vec()),
        )
    }

    /// How many status records are stored (walks every bucket; for tests and gauges).
    pub fn statuses_len(&self) -> usize {
        self.statuses
            .iter()
            .filter_map(Result::ok)
            .map(|(_, v)| dedupe::iter(&v).map_while(Result::ok).count())
            .sum()
    }

    /// Moves the per-SID status records of earlier versions ([`Tag::Status`]) into
    /// buckets. Runs at open, before the writer starts. In passes over an eighth of the
    /// buckets each (memory: an eighth of the records), every bucket written once per
    /// pass; once all are flushed, the old keys are removed. A kill midway loses
    /// nothing: a record is findable in its bucket once that is written, setting it
    /// again is idempotent (nothing else writes before the migration ends), and the
    /// next open redoes it. Returns how many records were moved.
    pub(crate) fn migrate_statuses(&self, progress: &mut dyn FnMut()) -> Result<usize, StoreError> {
        const PASSES: u8 = 8;
        let h = handles(&self.cell)?;
        let legacy = [Tag::Status as u8];
        if h.data.scan_prefix(legacy).next().is_none() {
            return Ok(0);
        }
        tracing::info!("moving the delivery statuses into buckets (once, after an upgrade)");
        for pass in 0..PASSES {
            progress();
            let mut recs: std::collections::BTreeMap<[u8; 2], Vec<(sled::IVec, Vec<u8>)>> =
                Default::default();
            for (i, item) in h.data.scan_prefix(legacy).enumerate() {
                if i % 10_000 == 0 {
                    progress();
                }
                let (k, v) = item?;
                let n = bucket_of(&k[1..]);
                if n[0] / (u8::MAX / PASSES + 1) != pass {
                    continue;
                }
                // An unreadable record answers nothing (the prune would drop it).
                if let Ok(rec) = super::dec::<StatusRecord>(&v) {
                    recs.entry(n).or_default().push((k, encode(&rec)));
                }
            }
            let mut b = sled::Batch::default();
            for (i, (n, items)) in recs.into_iter().enumerate() {
                let full = self.statuses.full_key(&n);
                let mut bucket = match h.data.get(&full)? {
                    Some(stored) if dedupe::entries(&stored).is_err() => {
                        b.insert(self.quarantine.full_key(&full), stored.clone());
                        dedupe::salvage(&stored)
                    }
                    Some(stored) => stored.to_vec(),
                    None => Vec::new(),
                };
                for (k, entry) in items {
                    if let Ok(next) = dedupe::with(&bucket, &k[1..], &entry) {
                        bucket = next;
                    }
                }
                b.insert(full, bucket);
                if (i + 1) % BUCKETS_PER_BATCH == 0 {
                    progress();
                    h.data.apply_batch(std::mem::take(&mut b))?;
                }
            }
            h.data.apply_batch(b)?;
        }
        progress();
        h.db.flush()?;
        let moved = super::remove_prefix(&h, &legacy, progress)?;
        h.db.flush()?;
        tracing::info!(records = moved, "moved the delivery statuses into buckets");
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let table = [
            ("queued", None, 0),
            ("delivered", None, 1_765_000_000_000),
            ("undelivered", Some("30007"), u64::MAX),
            ("", None, 7),
        ];
        for (status, code, at) in table {
            let rec = StatusRecord {
                status: status.into(),
                error_code: code.map(str::to_string),
                at,
            };
            assert_eq!(decode(&encode(&rec)), Ok(rec));
        }
        assert_eq!(decode(b""), Err(Corrupt));
        assert_eq!(decode(&[0; 8]), Err(Corrupt));
        assert_eq!(decode(&[0, 0, 0, 0, 0, 0, 0, 0, 5, b'a']), Err(Corrupt));
    }

    proptest::proptest! {
        /// A stored entry is bytes from disk: whatever they are, decoding never panics,
        /// and what decodes encodes back to the same record.
        #[test]
        fn any_bytes_decode_without_panic(junk in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            if let Ok(rec) = decode(&junk) {
                proptest::prop_assert_eq!(decode(&encode(&rec)), Ok(rec));
            }
        }
    }
}
