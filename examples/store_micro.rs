//! Benchmark helper: what the store's calls on the webhook path cost on their own,
//! without HTTP, signatures or the agent. Wall time and process CPU time (all threads,
//! so sled's own IO threads count) per call, on a fresh store in STATE_DIR.
//!
//! `taskset -c 0 cargo run --release --example store_micro -- STATE_DIR [N]` (N 5000)

#[path = "common/proc.rs"]
mod proc;

use std::time::Instant;

use smsgate::phone::E164;
use smsgate::store::{now_ms, InboundRecord, Store};

fn record(i: u64) -> InboundRecord {
    let sid = format!("SMmicro{i:027x}");
    let from = format!("+1556{:07}", i % 10_000_000);
    let params = [
        ("ToCountry", "US"),
        ("ToState", "CA"),
        ("SmsMessageSid", sid.as_str()),
        ("NumMedia", "0"),
        ("ToCity", "SAN FRANCISCO"),
        ("FromZip", "94105"),
        ("SmsSid", sid.as_str()),
        ("FromState", "CA"),
        ("SmsStatus", "received"),
        ("FromCity", "SAN FRANCISCO"),
        ("Body", "Hello from the benchmark, is the agent there?"),
        ("FromCountry", "US"),
        ("To", "+15550001111"),
        ("ToZip", "94105"),
        ("NumSegments", "1"),
        ("MessageSid", sid.as_str()),
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("From", from.as_str()),
        ("ApiVersion", "2010-04-01"),
    ];
    InboundRecord {
        sid: sid.clone(),
        account: "default".into(),
        sms: smsgate::twilio::fields::InboundSms::from_params(
            &params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        ),
        received_at_ms: now_ms(),
    }
}

fn measure(name: &str, n: u64, mut f: impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let (t, c) = (Instant::now(), proc::cpu_s());
    for i in 0..n {
        f(i)?;
    }
    let wall = t.elapsed().as_secs_f64();
    println!(
        "{name:<44} {:>8.1} µs wall/call {:>8.1} µs CPU/call",
        1e6 * wall / n as f64,
        1e6 * (proc::cpu_s() - c) / n as f64
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: store_micro STATE_DIR [N]"))?;
    let n: u64 = args.next().map_or(Ok(5000), |s| s.parse())?;
    let store = Store::open(std::path::Path::new(&dir))?;
    let base = 1_000_000u64;

    measure("Store::admit (dedupe get + one Batch)", n, |i| {
        store.admit(&record(base + i))?;
        Ok(())
    })?;
    measure("Store::approve_sender (a one-insert Batch)", n, |i| {
        let number = E164::parse(&format!("+1557{:07}", i)).map_err(|e| anyhow::anyhow!("{e}"))?;
        store.approve_sender("default", &number, now_ms())?;
        Ok(())
    })?;
    measure("Store::flush with nothing new", n.min(1000), |_| {
        store.flush()?;
        Ok(())
    })?;
    measure("Store::admit + Store::flush", n.min(2000), |i| {
        store.admit(&record(2 * base + i))?;
        store.flush()?;
        Ok(())
    })?;
    // Why the writer applies one sled Batch per round (store/area.rs): sled 0.34 seals
    // and writes its log buffer twice per apply_batch. Same 30 admissions under one
    // fsync, as 30 Batches (the writer before) and through the Writer (one Batch).
    measure(
        "30 x Store::admit + one flush, per admission",
        n.min(3000) / 30 * 30,
        |i| {
            store.admit(&record(3 * base + i))?;
            if i % 30 == 29 {
                store.flush()?;
            }
            Ok(())
        },
    )?;
    let store = std::sync::Arc::new(store);
    let writer = smsgate::store::Writer::start(store.clone());
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    measure(
        "Writer: 30 admissions a round, per admission",
        n.min(3000) / 30 * 30,
        |i| {
            let rec = record(4 * base + i);
            if i % 30 == 29 {
                rt.block_on(writer.write(move |st, _| st.admit(&rec).map(|_| ())))?;
            } else {
                writer.submit("admission", move |st, _| st.admit(&rec).map(|_| ()), |_| {});
            }
            Ok(())
        },
    )?;
    measure(
        "Store::next_spooled (first + JSON decode)",
        n.min(2000),
        |_| {
            store.next_spooled()?;
            Ok(())
        },
    )?;
    Ok(())
}
