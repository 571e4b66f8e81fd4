//! Benchmark helper: two limits of sled 0.34 itself, without any smsgate code, that
//! docs/performance.md cites for issue 10's targets.
//!
//! 1. `batches`: 30 messages (a dedupe mark and a 600-byte inbox entry each) applied
//!    before one flush, three ways: one `apply_batch` per message, plain inserts, one
//!    `apply_batch` for all 30. sled seals and writes its IO buffer twice per
//!    `apply_batch`, which is why the store writer applies one batch per round.
//! 2. `floor`: the sled operations one webhook needs in smsgate today, with nothing
//!    else: per message two reads that miss (its dedupe mark, the sender's
//!    conversation), three inserts (dedupe mark with its reply route, a 300-byte inbox
//!    entry, the new sender's conversation id) and, once the agent acks, one removal;
//!    20 messages a round (what the benchmark sees at 64 connections), one
//!    `apply_batch` and one flush a round, 30,000 messages. This is sled's floor for a
//!    webhook, to hold against bare hyper's ~18 µs of CPU per request.
//! 3. `open`: fills a tree with 1,000,000 dedupe marks (key and value as the store
//!    writes them), then reopens it and reports the time to open and the RSS after: what
//!    sled alone costs a grown store at start.
//!
//! `taskset -c 0 cargo run --release --example sled_limits -- DIR` (DIR on a real disk,
//! e.g. /var/tmp/sl; it is emptied first). CPU is the process's, all threads.

#[path = "common/proc.rs"]
mod proc;

use std::time::Instant;

fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string()
}

fn config(dir: &std::path::Path) -> sled::Config {
    smsgate::store::sled_config(dir)
}

fn batches(dir: &std::path::Path) -> anyhow::Result<()> {
    let value = vec![b'x'; 600];
    let rounds = 200u64;
    for way in [
        "one apply_batch per message",
        "plain inserts",
        "one apply_batch for all 30",
    ] {
        let _ = std::fs::remove_dir_all(dir);
        let db = config(dir).open()?;
        let tree = db.open_tree("data")?;
        let (c0, t0) = ((proc::cpu_s() * 1e6), Instant::now());
        let mut n = 0u64;
        for _ in 0..rounds {
            let mut all = sled::Batch::default();
            for _ in 0..30 {
                n += 1;
                let (mark, entry) = (format!("sSM{n:032x}"), format!("i{n:016x}"));
                match way {
                    "plain inserts" => {
                        tree.insert(mark.as_bytes(), &n.to_be_bytes()[..])?;
                        tree.insert(entry.as_bytes(), &value[..])?;
                    }
                    "one apply_batch per message" => {
                        let mut b = sled::Batch::default();
                        b.insert(mark.as_bytes(), &n.to_be_bytes()[..]);
                        b.insert(entry.as_bytes(), &value[..]);
                        tree.apply_batch(b)?;
                    }
                    _ => {
                        all.insert(mark.as_bytes(), &n.to_be_bytes()[..]);
                        all.insert(entry.as_bytes(), &value[..]);
                    }
                }
            }
            tree.apply_batch(all)?;
            db.flush()?;
        }
        println!(
            "30 messages, then flush: {way:<30} {:>7.1} µs CPU/message {:>7.2} ms wall/flush",
            ((proc::cpu_s() * 1e6) - c0) / n as f64,
            t0.elapsed().as_secs_f64() * 1e3 / rounds as f64
        );
    }
    Ok(())
}

fn floor(dir: &std::path::Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let db = config(dir).open()?;
    let tree = db.open_tree("data")?;
    let entry = vec![b'x'; 300];
    let (rounds, per_round) = (1500u64, 20u64);
    let (c0, t0) = ((proc::cpu_s() * 1e6), Instant::now());
    let mut acks: Vec<Vec<u8>> = Vec::new();
    let mut n = 0u64;
    for _ in 0..rounds {
        let mut b = sled::Batch::default();
        // The acks of the previous round's messages ride in this round's batch.
        for k in acks.drain(..) {
            b.remove(k);
        }
        for _ in 0..per_round {
            n += 1;
            let sid = format!("sSM{:032x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let number = format!("+1555{:07}", n % 10_000_000);
            let conv = format!("cdefault\0{number}");
            let _ = tree.get(sid.as_bytes())?;
            let _ = tree.get(conv.as_bytes())?;
            let mut seen = n.to_be_bytes().to_vec();
            seen.extend_from_slice(format!("default\0{number}").as_bytes());
            b.insert(sid.as_bytes(), seen);
            let inbox = format!("i{n:016x}").into_bytes();
            b.insert(inbox.clone(), &entry[..]);
            b.insert(conv.as_bytes(), format!("c-{n:024x}").as_bytes());
            acks.push(inbox);
        }
        tree.apply_batch(b)?;
        db.flush()?;
    }
    println!(
        "one webhook's sled operations (2 gets, 3 inserts, 1 removal; 20 a round): {:>6.1} µs CPU/message {:>6.2} ms wall/round",
        ((proc::cpu_s() * 1e6) - c0) / n as f64,
        t0.elapsed().as_secs_f64() * 1e3 / rounds as f64
    );
    Ok(())
}

fn open(dir: &std::path::Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    {
        let db = config(dir).open()?;
        let tree = db.open_tree("data")?;
        for chunk in 0..100u64 {
            let mut b = sled::Batch::default();
            for i in 0..10_000u64 {
                let n = chunk * 10_000 + i;
                let sid = format!("sSM{:032x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                b.insert(sid.as_bytes(), &n.to_be_bytes()[..]);
            }
            tree.apply_batch(b)?;
        }
        db.flush()?;
    }
    // Each open in a fresh process, so the RSS is the open's alone.
    for attempt in 1..=3 {
        let out = std::process::Command::new(std::env::current_exe()?)
            .arg(dir)
            .arg("reopen")
            .output()?;
        print!("(open {attempt}) {}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

fn reopen(dir: &std::path::Path) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let db = config(dir).open()?;
    let tree = db.open_tree("data")?;
    let opened = t0.elapsed();
    let _ = tree.get(b"s")?;
    println!(
        "open a tree of 1,000,000 dedupe marks: {:>7.1} ms, VmRSS {} kB after",
        opened.as_secs_f64() * 1e3,
        rss()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: sled_limits DIR"))?;
    let dir = std::path::Path::new(&dir);
    if std::env::args().nth(2).as_deref() == Some("reopen") {
        return reopen(dir);
    }
    batches(&dir.join("batches"))?;
    floor(&dir.join("floor"))?;
    open(&dir.join("open"))?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
