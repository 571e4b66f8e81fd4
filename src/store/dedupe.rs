//! Dedupe marks packed into buckets: the pure part (which bucket, the bucket codec).
//!
//! Why buckets: sled 0.34 keeps at most 16 entries in a leaf and, at every open,
//! replays its page table and rebuilds its segment accounting page by page. A million
//! dedupe marks as a million keys are ~62,000 leaves: opening that tree took 150–190 ms
//! and 62 MiB before smsgate ran anything (`examples/sled_limits.rs`,
//! docs/performance.md). The same marks packed into 65,536 buckets (one key each,
//! ~15 marks of ~70 bytes in a bucket at a million) open in ~17 ms with ~6 MiB. A
//! lookup is still one sled read (the bucket) and a mark still one sled insert (the
//! bucket rewritten), so the hot path does not get more operations, only ~1 KB more
//! bytes per mark once the store is big.
//!
//! A bucket's value is its entries one after another, each
//! `key_len (u16 BE) | key | value_len (u16 BE) | value`, where `value` is a
//! [`super::area::seen_value`] (admission time, and the reply route of a message that
//! went to the agent). Keys are unique within a bucket.

/// How many buckets: 2^16, so a bucket key is two bytes and a million marks give
/// ~15 per bucket.
const BUCKET_BITS: u32 = 16;

/// The bucket a dedupe key (a SID, or a status callback's key) lives in. FNV-1a:
/// stable across versions and platforms (it decides where marks are found after an
/// upgrade), and SIDs come signed from Twilio, so nobody picks collisions.
pub fn bucket_of(key: &[u8]) -> [u8; 2] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Fold the high bits in: FNV's low bits alone mix poorly for short keys.
    let folded = (h ^ (h >> 32) ^ (h >> 48)) & ((1 << BUCKET_BITS) - 1);
    (folded as u16).to_be_bytes()
}

/// A bucket that does not decode (cut short, or a length that runs past the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// One mark in a bucket: (key, value).
pub(crate) type Entry<'a> = (&'a [u8], &'a [u8]);

/// A bucket's entries in order; after a bad one, one `Err` and nothing more.
pub(crate) fn iter(bucket: &[u8]) -> impl Iterator<Item = Result<Entry<'_>, Corrupt>> {
    let mut rest = bucket;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let next = field(rest)
            .and_then(|(key, after)| field(after).map(|(value, after)| ((key, value), after)));
        Some(match next {
            Ok((entry, after)) => {
                rest = after;
                Ok(entry)
            }
            Err(c) => {
                rest = &[];
                Err(c)
            }
        })
    })
}

/// The entries of a bucket, in order, or [`Corrupt`].
pub(crate) fn entries(bucket: &[u8]) -> Result<Vec<Entry<'_>>, Corrupt> {
    iter(bucket).collect()
}

fn field(b: &[u8]) -> Result<(&[u8], &[u8]), Corrupt> {
    let len = b.get(..2).ok_or(Corrupt)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let body = b.get(2..2 + len).ok_or(Corrupt)?;
    Ok((body, &b[2 + len..]))
}

/// What can be kept of a bucket that does not decode: its entries up to the first bad
/// one, re-encoded (marks after it are lost; the caller keeps the raw bytes).
pub(crate) fn salvage(bucket: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in iter(bucket).map_while(Result::ok) {
        // Entries that decoded fit a u16 length again.
        let _ = push(&mut out, key, value);
    }
    out
}

/// The value stored under `key` in `bucket`.
pub(crate) fn find<'a>(bucket: &'a [u8], key: &[u8]) -> Result<Option<&'a [u8]>, Corrupt> {
    for entry in iter(bucket) {
        let (k, v) = entry?;
        if k == key {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// Too long to store (a length must fit in a u16); dedupe keys and values are short,
/// so this only guards against a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

/// `bucket` with `key` set to `value` (replaced in place if present, else appended).
pub fn with(bucket: &[u8], key: &[u8], value: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let old = entries(bucket).map_err(EncodeError::Corrupt)?;
    let mut out = Vec::with_capacity(bucket.len() + key.len() + value.len() + 4);
    let mut replaced = false;
    for (k, v) in old {
        let v = if k == key {
            replaced = true;
            value
        } else {
            v
        };
        push(&mut out, k, v).map_err(EncodeError::TooLong)?;
    }
    if !replaced {
        push(&mut out, key, value).map_err(EncodeError::TooLong)?;
    }
    Ok(out)
}

/// Why [`with`] could not build a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    Corrupt(Corrupt),
    TooLong(TooLong),
}

/// `bucket` keeping only the entries `keep` accepts; `None` when none was dropped.
pub(crate) fn retain(
    bucket: &[u8],
    mut keep: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<Option<Vec<u8>>, Corrupt> {
    let all = entries(bucket)?;
    let kept: Vec<_> = all.iter().filter(|(k, v)| keep(k, v)).collect();
    if kept.len() == all.len() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(bucket.len());
    for (k, v) in kept {
        // Re-encoding entries that decoded cannot be too long.
        push(&mut out, k, v).map_err(|_| Corrupt)?;
    }
    Ok(Some(out))
}

fn push(out: &mut Vec<u8>, key: &[u8], value: &[u8]) -> Result<(), TooLong> {
    for part in [key, value] {
        let len = u16::try_from(part.len()).map_err(|_| TooLong)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(items: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in items {
            b = with(&b, k.as_bytes(), v.as_bytes()).expect("encode");
        }
        b
    }

    #[test]
    fn set_find_and_replace() {
        // (entries set in order, key looked up, expected value)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<&'a str>);
        let table: &[Case] = &[
            (&[], "SM1", None),
            (&[("SM1", "a")], "SM1", Some("a")),
            (&[("SM1", "a"), ("SM2", "b")], "SM2", Some("b")),
            (&[("SM1", "a"), ("SM2", "b")], "SM3", None),
            // Set twice: replaced, not duplicated.
            (&[("SM1", "a"), ("SM1", "c")], "SM1", Some("c")),
            // A key that is a prefix of another is its own key.
            (&[("SM12", "x"), ("SM1", "y")], "SM1", Some("y")),
            (&[("", "")], "", Some("")),
        ];
        for (items, key, want) in table {
            let b = bucket(items);
            let got = find(&b, key.as_bytes()).expect("decode");
            assert_eq!(got, want.map(str::as_bytes), "{items:?} {key}");
        }
        let b = bucket(&[("SM1", "a"), ("SM1", "c"), ("SM2", "b")]);
        assert_eq!(entries(&b).expect("decode").len(), 2);
    }

    #[test]
    fn corrupt_buckets_are_errors_not_panics() {
        let good = bucket(&[("SM1", "value")]);
        for cut in 0..good.len() {
            let short = &good[..cut];
            if cut == 0 {
                assert_eq!(entries(short), Ok(vec![]));
                continue;
            }
            assert_eq!(entries(short), Err(Corrupt), "cut at {cut}");
            assert_eq!(find(short, b"SM1"), Err(Corrupt), "cut at {cut}");
            assert!(with(short, b"SM2", b"v").is_err());
            assert_eq!(retain(short, |_, _| true), Err(Corrupt));
        }
        // A length that runs past the end.
        assert_eq!(entries(&[0xff, 0xff, b'x']), Err(Corrupt));
        // Salvage keeps the entries before the bad point.
        let two = bucket(&[("SM1", "a"), ("SM2", "b")]);
        let cut = &two[..two.len() - 1];
        let kept = salvage(cut);
        assert_eq!(
            entries(&kept).expect("decode"),
            vec![(&b"SM1"[..], &b"a"[..])]
        );
        assert_eq!(salvage(&two), two, "a good bucket is kept whole");
        assert!(salvage(&[0xff]).is_empty());
    }

    #[test]
    fn retain_drops_only_what_it_should() {
        let b = bucket(&[("SM1", "old"), ("SM2", "new"), ("SM3", "old")]);
        assert_eq!(retain(&b, |_, _| true), Ok(None), "nothing dropped");
        let kept = retain(&b, |_, v| v == b"new")
            .expect("decode")
            .expect("dropped");
        assert_eq!(
            entries(&kept).expect("decode"),
            vec![(&b"SM2"[..], &b"new"[..])]
        );
        let none = retain(&b, |_, _| false).expect("decode").expect("dropped");
        assert!(none.is_empty());
    }

    #[test]
    fn too_long_is_refused() {
        let long = vec![b'x'; 70_000];
        assert_eq!(with(&[], &long, b"v"), Err(EncodeError::TooLong(TooLong)));
        assert_eq!(with(&[], b"k", &long), Err(EncodeError::TooLong(TooLong)));
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        // Stable: where a mark is found must not change between versions.
        assert_eq!(
            bucket_of(b"SM00000000000000000000000000000000"),
            bucket_of(b"SM00000000000000000000000000000000")
        );
        let pinned = bucket_of(b"SMa0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5");
        assert_eq!(
            pinned, BUCKET_PIN,
            "bucket_of changed: stores written before would lose their marks"
        );
        // Spread: 65,536 sequential SIDs fill most buckets (a uniform hash fills
        // 1 - 1/e ≈ 63 %).
        let mut used = std::collections::HashSet::new();
        for i in 0..65_536u32 {
            used.insert(bucket_of(format!("SM{i:032x}").as_bytes()));
        }
        assert!(used.len() > 38_000, "only {} buckets used", used.len());
    }

    const BUCKET_PIN: [u8; 2] = [238, 82];

    proptest::proptest! {
        /// A stored bucket is bytes from disk: whatever they are, decoding them never
        /// panics, and a bucket built by `with` holds exactly the last value set for
        /// each key.
        #[test]
        fn any_bytes_decode_without_panic_and_sets_round_trip(
            junk in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            sets in proptest::collection::vec((0u8..12, proptest::collection::vec(proptest::num::u8::ANY, 0..20)), 0..40),
        ) {
            let _ = entries(&junk);
            let _ = find(&junk, b"SM1");
            let _ = retain(&junk, |_, _| false);
            let _ = with(&junk, b"SM1", b"v");
            let mut bucket = Vec::new();
            let mut want = std::collections::BTreeMap::new();
            for (k, v) in &sets {
                let key = format!("SM{k}");
                bucket = with(&bucket, key.as_bytes(), v).expect("encode");
                want.insert(key, v.clone());
            }
            proptest::prop_assert_eq!(entries(&bucket).expect("decode").len(), want.len());
            for (k, v) in &want {
                proptest::prop_assert_eq!(find(&bucket, k.as_bytes()).expect("decode"), Some(&v[..]));
            }
        }
    }
}
