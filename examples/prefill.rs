//! Benchmark helper: grows a (stopped) gateway's store to a realistic size before a run.
//!
//! `cargo run --release --example prefill -- STATE_DIR [SIDS] [SENDERS] [batch|store]`
//! (defaults 1000000, 10000, `batch`). Account `default`.
//!
//! - SENDERS approved senders (+1555xxxxxxx), through `Store::approve_sender`.
//! - SIDS processed message SIDs in the dedupe area (buckets, `S` in the `data` tree),
//!   timestamped now, so the hourly `prune_seen` keeps them (it still walks all of them
//!   once at start).
//!
//! The store has no public "mark this SID processed" method. Two ways:
//!
//! - `store`: `Store::admit_rejected`, the public path that records a SID in `seen`
//!   without spooling it. Each call is a sled transaction, and sled writes every
//!   transaction out on its own (about 1.4 KiB of log per SID here): ~4,000 SIDs/s and
//!   ~1.4 GB for a million, too slow for a five-minute benchmark. It also leaves a
//!   record per SID in the `rejected` tree.
//! - `batch` (default): after `Store::open` has created the store, opens the same sled
//!   database and writes the dedupe buckets (`smsgate::store::dedupe`) in 16 rounds, each
//!   rewriting every bucket it adds to, as the daemon does when a mark arrives (the
//!   mark's value: admission time in ms, u64 big-endian), i.e. the state a million
//!   processed messages leave behind. It then reopens the
//!   store and checks that `Store::admit_rejected` calls a few of those SIDs duplicates,
//!   so a change of layout fails here loudly instead of silently measuring an empty
//!   store. (Not `Store::seen_count()`: sled counts by walking the whole tree.)
//!
//! Ends with a flush. The gateway must not be running (sled locks the store).

use std::time::Instant;

use smsgate::phone::E164;
use smsgate::store::{dedupe, now_ms, Admission, RejectedRecord, Store};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or_else(|| {
        anyhow::anyhow!("usage: prefill STATE_DIR [SIDS] [SENDERS] [batch|store]")
    })?;
    let sids: u64 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let senders: u64 = args.next().map_or(Ok(10_000), |s| s.parse())?;
    let mode = args.next().unwrap_or_else(|| "batch".to_string());
    let account = "default".to_string();
    let sid = |i: u64| format!("SMprefill{:025x}", i); // 34 characters, like Twilio's

    let started = Instant::now();
    let store = Store::open(std::path::Path::new(&dir))?;
    let now = now_ms();

    for i in 0..senders {
        let number = E164::parse(&format!("+1555{:07}", i))
            .map_err(|e| anyhow::anyhow!("bad number: {e}"))?;
        store.approve_sender(&account, &number, now)?;
    }

    match mode.as_str() {
        "store" => {
            // Two threads (the benchmark machine has two cores); sled is thread-safe.
            let threads = 2u64;
            std::thread::scope(|s| -> anyhow::Result<()> {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let store = store.clone();
                        let account = account.clone();
                        s.spawn(move || -> anyhow::Result<()> {
                            let mut i = t;
                            while i < sids {
                                store.admit_rejected(&RejectedRecord {
                                    sid: sid(i),
                                    account: account.clone(),
                                    reason: "benchmark prefill".to_string(),
                                    received_at_ms: now,
                                })?;
                                i += threads;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for h in handles {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("prefill thread panicked"))??;
                }
                Ok(())
            })?;
        }
        "batch" => {
            store.flush()?;
            drop(store);
            let db = sled::Config::new()
                .path(std::path::Path::new(&dir).join("db"))
                .open()?;
            // The single tree, area `S`: dedupe marks in buckets (src/store/dedupe.rs).
            // Grown the way the daemon grows it: marks arrive over time, so every
            // bucket is rewritten once per round as it fills (sled's garbage and page
            // table then look like a store that took a million webhooks, not like one
            // written in one go).
            let seen = db.open_tree("data")?;
            let value = now.to_be_bytes(); // a mark without a reply route
            const ROUNDS: u64 = 16;
            let mut buckets: std::collections::HashMap<[u8; 2], Vec<u8>> = Default::default();
            for round in 0..ROUNDS {
                let mut touched = std::collections::BTreeSet::new();
                for j in sids * round / ROUNDS..sids * (round + 1) / ROUNDS {
                    let s = sid(j);
                    let n = dedupe::bucket_of(s.as_bytes());
                    let bucket = buckets.entry(n).or_default();
                    *bucket = dedupe::with(bucket, s.as_bytes(), &value)
                        .map_err(|e| anyhow::anyhow!("cannot encode a bucket: {e:?}"))?;
                    touched.insert(n);
                }
                let touched: Vec<_> = touched.into_iter().collect();
                for chunk in touched.chunks(1_000) {
                    let mut batch = sled::Batch::default();
                    for n in chunk {
                        let mut key = vec![b'S'];
                        key.extend_from_slice(n);
                        batch.insert(key, buckets[n].as_slice());
                    }
                    seen.apply_batch(batch)?;
                }
            }
            db.flush()?;
            drop(seen);
            drop(db);
            let store = Store::open(std::path::Path::new(&dir))?;
            // A SID we wrote must be a duplicate now (and a duplicate writes nothing).
            for i in [0, sids / 2, sids.saturating_sub(1)]
                .into_iter()
                .filter(|_| sids > 0)
            {
                let dup = store.admit_rejected(&RejectedRecord {
                    sid: sid(i),
                    account: account.clone(),
                    reason: "benchmark prefill check".to_string(),
                    received_at_ms: now,
                })?;
                anyhow::ensure!(
                    dup == Admission::Duplicate,
                    "wrote {} to the dedupe area but the store does not know it: has the \
                     store's layout changed? (try the `store` mode)",
                    sid(i)
                );
            }
            finish(&store, &dir, &account, sids, started)?;
            return Ok(());
        }
        other => anyhow::bail!("unknown mode {other:?}: use batch or store"),
    }
    finish(&store, &dir, &account, sids, started)
}

fn finish(
    store: &Store,
    dir: &str,
    account: &str,
    sids: u64,
    started: Instant,
) -> anyhow::Result<()> {
    store.flush()?;
    println!(
        "prefilled {dir}: {sids} SIDs, {} approved senders in {:.1} s",
        store.approved_senders(Some(account))?.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
