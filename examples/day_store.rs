//! Memory measurement helper (issue 20 item 6): grows a (stopped) gateway's store to
//! what one busy day leaves behind, so the gateway can be started on it and its idle
//! RSS read (`bench/idle-rss` does both).
//!
//! `cargo run --release --example day_store -- STATE_DIR [WEBHOOKS] [SENDS] [SENDERS] [limits|zero]`
//! (defaults 1000000, 1000000, 10000, limits). Account `default`. `zero` grows the
//! store the daemon leaves when every `outboundLimits` key is 0: no sent log.
//!
//! - WEBHOOKS admitted webhooks' dedupe marks, each with its reply route (account,
//!   sender), in the dedupe buckets, grown in 16 rounds the way the daemon grows them
//!   (as `examples/prefill.rs` does), timestamped over the last 23 hours.
//! - SENDERS approved senders, each with a conversation id.
//! - SENDS finished sends (`Store::complete_send`, the daemon's own path; in the sent
//!   log unless `zero`), spread over the last 23 hours (so all of them count for `perDay`), one
//!   segment each, to the SENDERS in turn, and for every one the `sent` and
//!   `delivered` status callbacks (`Store::record_status`, the daemon's own path).
//!
//! Ends with a flush. The gateway must not be running (sled locks the store).
//!
//! `day_store STATE_DIR to-legacy` instead rewrites a grown store into the layout of
//! earlier versions: every delivery status as its own key (area `t`, JSON) and every
//! segment of the sent log as its own key (area `L`), removing the buckets (`T`) and
//! per-minute records (`N`): the store an upgrade starts from, for measuring the
//! migration and the idle RSS after it (docs/performance.md).

use std::time::Instant;

use smsgate::phone::E164;
use smsgate::store::{dedupe, now_ms, OutboundRecord, Purpose, Store};

const HOUR_MS: u64 = 3_600_000;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or_else(|| {
        anyhow::anyhow!("usage: day_store STATE_DIR [WEBHOOKS] [SENDS] [SENDERS] [limits|zero]")
    })?;
    let first = args.next();
    if first.as_deref() == Some("to-legacy") {
        return to_legacy(&dir);
    }
    let webhooks: u64 = first.map_or(Ok(1_000_000), |s| s.parse())?;
    let sends: u64 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let senders: u64 = args.next().map_or(Ok(10_000), |s| s.parse())?.max(1);
    // `limits`: the sends were made with a limit set, so each is in the sent log;
    // `zero`: with every limit 0, so none is (what the daemon writes then).
    let counted = match args.next().as_deref() {
        None | Some("limits") => true,
        Some("zero") => false,
        Some(other) => anyhow::bail!("unknown mode {other:?}: use limits or zero"),
    };
    let account = "default";
    let number = |i: u64| format!("+1555{:07}", i % senders);
    let started = Instant::now();
    let now = now_ms();
    // Spread over the last 23 hours, oldest first.
    let at = |i: u64, n: u64| now - 23 * HOUR_MS + i * (23 * HOUR_MS) / n.max(1);

    let store = Store::open(std::path::Path::new(&dir))?;
    for i in 0..senders {
        let n = E164::parse(&number(i)).map_err(|e| anyhow::anyhow!("bad number: {e}"))?;
        store.approve_sender(account, &n, now)?;
    }
    store.flush()?;
    drop(store);

    // Dedupe marks and conversations straight into sled (the store has no public
    // "mark processed" method; see examples/prefill.rs for why and how).
    {
        let db = smsgate::store::sled_config(&std::path::Path::new(&dir).join("db")).open()?;
        let data = db.open_tree("data")?;
        let mut batch = sled::Batch::default();
        for i in 0..senders {
            let mut key = vec![b'c'];
            key.extend_from_slice(account.as_bytes());
            key.push(0);
            key.extend_from_slice(number(i).as_bytes());
            batch.insert(key, format!("c{i:016x}").as_bytes());
        }
        data.apply_batch(batch)?;
        const ROUNDS: u64 = 16;
        let mut buckets: std::collections::HashMap<[u8; 2], Vec<u8>> = Default::default();
        for round in 0..ROUNDS {
            let mut touched = std::collections::BTreeSet::new();
            for j in webhooks * round / ROUNDS..webhooks * (round + 1) / ROUNDS {
                let sid = format!("SMday{:029x}", j);
                let mut value = at(j, webhooks).to_be_bytes().to_vec();
                value.extend_from_slice(account.as_bytes());
                value.push(0);
                value.extend_from_slice(number(j).as_bytes());
                let n = dedupe::bucket_of(sid.as_bytes());
                let bucket = buckets.entry(n).or_default();
                *bucket = dedupe::with(bucket, sid.as_bytes(), &value)
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
                data.apply_batch(batch)?;
            }
        }
        db.flush()?;
    }
    println!(
        "{webhooks} webhooks' marks, {senders} senders: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let store = Store::open(std::path::Path::new(&dir))?;
    for i in 0..sends {
        let to = E164::parse(&number(i)).map_err(|e| anyhow::anyhow!("bad number: {e}"))?;
        let t = at(i, sends);
        let rec = OutboundRecord::new(
            i + 1,
            account,
            to,
            "a reply of an ordinary length, one segment".into(),
            Purpose::Reply {
                message_id: format!("SMday{:029x}", i),
            },
            t,
        );
        // With its SID, as the sender records a send Twilio accepted: only then are
        // the callbacks for it ours and stored (issue 20 item 10).
        let sid = format!("SMsent{:028x}", i);
        store.complete_send(&rec, 1, t, Some((&sid, "queued")), counted)?;
        for (status, after) in [("sent", 500), ("delivered", 2_000)] {
            let applied = store.record_status(&sid, status, None, t + after)?;
            anyhow::ensure!(
                applied == smsgate::store::StatusUpdate::Applied,
                "a status was not stored"
            );
        }
        if i % 100_000 == 99_999 {
            println!("{} sends: {:.1} s", i + 1, started.elapsed().as_secs_f64());
        }
    }
    store.flush()?;
    println!(
        "grew {dir}: {webhooks} webhooks, {sends} sends with 2 statuses each, {senders} senders in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Rewrites the status buckets and per-minute sent records of a grown store as the
/// one-key-per-status and one-key-per-send areas of earlier versions.
fn to_legacy(dir: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let db = smsgate::store::sled_config(&std::path::Path::new(dir).join("db")).open()?;
    let data = db.open_tree("data")?;
    let (mut statuses, mut sends) = (0u64, 0u64);
    let mut batch = sled::Batch::default();
    let mut ops = 0;
    let flush = |batch: &mut sled::Batch, ops: &mut usize, force: bool| -> anyhow::Result<()> {
        if force || *ops >= 10_000 {
            data.apply_batch(std::mem::take(batch))?;
            *ops = 0;
        }
        Ok(())
    };
    for item in data.scan_prefix([b'T']) {
        let (k, v) = item?;
        for (sid, rec) in smsgate::store::statuses::bucket_entries(&v) {
            let mut key = vec![b't'];
            key.extend_from_slice(sid);
            batch.insert(key, serde_json::to_vec(&rec)?);
            statuses += 1;
            ops += 1;
        }
        batch.remove(k);
        ops += 1;
        flush(&mut batch, &mut ops, false)?;
    }
    for item in data.scan_prefix([b'N']) {
        let (k, v) = item?;
        let Some((account, at)) = smsgate::store::sent::key_parts(&k[1..]) else {
            continue;
        };
        for (to, segments) in smsgate::store::sent::entries(&v) {
            for _ in 0..segments {
                let mut key = vec![b'L'];
                key.extend_from_slice(account.as_bytes());
                key.push(0);
                key.extend_from_slice(&at.to_be_bytes());
                key.extend_from_slice(&sends.to_be_bytes());
                batch.insert(key, serde_json::to_vec(&(to, 1u32))?);
                sends += 1;
                ops += 1;
            }
        }
        batch.remove(k.clone());
        ops += 1;
        flush(&mut batch, &mut ops, false)?;
    }
    flush(&mut batch, &mut ops, true)?;
    db.flush()?;
    println!(
        "{dir} in the earlier layout: {statuses} status keys, {sends} sent-log keys, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
