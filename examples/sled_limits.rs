//! Benchmark helper: two limits of sled 0.34 itself, without any smsgate code, that
//! docs/performance.md cites for issue 10's targets.
//!
//! 1. `batches`: 30 messages (a dedupe mark and a 600-byte inbox entry each) applied
//!    before one flush, three ways: one `apply_batch` per message, plain inserts, one
//!    `apply_batch` for all 30. sled seals and writes its IO buffer twice per
//!    `apply_batch`, which is why the store writer applies one batch per round.
//! 2. `open`: fills a tree with 1,000,000 dedupe marks (key and value as the store
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
    // As the store opens it (src/store/mod.rs).
    sled::Config::new()
        .path(dir)
        .cache_capacity(16 * 1024 * 1024)
        .flush_every_ms(Some(1000))
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
    open(&dir.join("open"))?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
