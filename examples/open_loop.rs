//! Benchmark load generator: open loop (a fixed arrival rate) or closed loop (as fast as
//! each connection gets answers), over many keep-alive connections, sending the
//! pre-signed distinct webhooks `bench/lib/gen_requests.py` writes (the same TEMPLATE and
//! LINES files `bench/requests.lua` reads; every request is sent once).
//!
//! Open loop corrects for coordinated omission: request `i` is *scheduled* at
//! `start + i / rate`, and its latency is counted from that time, not from when a free
//! connection got round to sending it. A server that stalls for 100 ms therefore shows
//! every request scheduled during the stall as late, as a Twilio account would see it
//! (Twilio does not wait for one webhook's answer before sending the next).
//!
//! With `--agent SOCK` it is also the agent: it connects to the gateway's agent socket,
//! acks every message (one write per read, like `bench/lib/ack_agent.py`) and counts
//! webhook → agent latency (from the scheduled time to the message line's arrival) for
//! the messages it sent, matched by `id` (the MessageSid).
//!
//! ```text
//! open_loop --addr 127.0.0.1:PORT --template T --lines L [--offset N] [--rate R]
//!           [--seconds S] [--count N] [--conns C] [--warmup S] [--agent SOCK]
//! ```
//! `--rate 0` is closed loop: `--count` requests (default: the lines from `--offset`),
//! `--conns` at a time, latency from each send. Open loop sends `rate × seconds`
//! requests; the first `--warmup` seconds of them are sent but not counted. Prints a
//! summary and one `OPENLOOP {json}` line (latencies in ms). Exits 1 if a line runs out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;

struct Args {
    addr: String,
    template: String,
    lines: String,
    offset: usize,
    rate: f64,
    seconds: f64,
    count: Option<usize>,
    conns: usize,
    warmup: f64,
    agent: Option<String>,
}

fn usage(msg: &str) -> ! {
    eprintln!("open_loop: {msg}\nsee the header of examples/open_loop.rs for usage");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: String::new(),
        template: String::new(),
        lines: String::new(),
        offset: 0,
        rate: 1000.0,
        seconds: 5.0,
        count: None,
        conns: 64,
        warmup: 0.0,
        agent: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| usage(&format!("{k} needs a value")));
        let num = |v: &str| -> f64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{k}: not a number")))
        };
        match k.as_str() {
            "--addr" => a.addr = v,
            "--template" => a.template = v,
            "--lines" => a.lines = v,
            "--offset" => a.offset = num(&v) as usize,
            "--rate" => a.rate = num(&v),
            "--seconds" => a.seconds = num(&v),
            "--count" => a.count = Some(num(&v) as usize),
            "--conns" => a.conns = (num(&v) as usize).max(1),
            "--warmup" => a.warmup = num(&v),
            "--agent" => a.agent = Some(v),
            _ => usage(&format!("unknown option {k}")),
        }
    }
    if a.addr.is_empty() || a.template.is_empty() || a.lines.is_empty() {
        usage("--addr, --template and --lines are required");
    }
    a
}

/// The raw requests (template with the markers filled in) and their SIDs.
fn load(a: &Args, n: Option<usize>) -> (Vec<Vec<u8>>, Vec<String>) {
    let tpl = std::fs::read_to_string(&a.template)
        .unwrap_or_else(|e| usage(&format!("{}: {e}", a.template)));
    let lines =
        std::fs::read_to_string(&a.lines).unwrap_or_else(|e| usage(&format!("{}: {e}", a.lines)));
    let mut reqs = Vec::new();
    let mut sids = Vec::new();
    for line in lines.lines().skip(a.offset) {
        if n.is_some_and(|n| reqs.len() >= n) {
            break;
        }
        let mut f = line.split(' ');
        let (Some(sig), Some(sid), Some(from)) = (f.next(), f.next(), f.next()) else {
            usage(&format!("bad line in {}: {line}", a.lines));
        };
        let r = tpl
            .replace("@SIG@", sig)
            .replace("@SID@", sid)
            .replace("@FROM@", from);
        reqs.push(r.into_bytes());
        sids.push(sid.to_string());
    }
    if let Some(n) = n {
        if reqs.len() < n {
            eprintln!(
                "open_loop: only {} requests in {} from line {} (need {n})",
                reqs.len(),
                a.lines,
                a.offset
            );
            std::process::exit(1);
        }
    }
    (reqs, sids)
}

/// One HTTP/1.1 answer read from `s` (keep-alive): its status. `buf` keeps bytes read
/// past the answer.
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("head not UTF-8"))?;
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("no status"))?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or_else(|| bad("no content-length"))?;
            let total = end + 4 + len;
            while buf.len() < total {
                read_more(s, buf).await?;
            }
            buf.drain(..total);
            return Ok(status);
        }
        read_more(s, buf).await?;
    }
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = s.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[derive(Default)]
struct Results {
    /// (request index, latency) of answered requests.
    answered: Vec<(usize, Duration)>,
    non200: usize,
    errors: usize,
}

/// Sends the request `i` on `conn` (connecting first if needed), records its latency
/// from `from`.
async fn one(
    addr: &str,
    conn: &mut Option<(TcpStream, Vec<u8>)>,
    req: &[u8],
    i: usize,
    from: Instant,
    res: &Mutex<Results>,
) {
    for attempt in 0..2 {
        if conn.is_none() {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    *conn = Some((s, Vec::new()));
                }
                Err(_) => break,
            }
        }
        let Some((s, buf)) = conn.as_mut() else { break };
        let r = async {
            s.write_all(req).await?;
            read_answer(s, buf).await
        }
        .await;
        match r {
            Ok(status) => {
                let mut g = res.lock().unwrap_or_else(|p| p.into_inner());
                if status == 200 {
                    g.answered.push((i, from.elapsed()));
                } else {
                    g.non200 += 1;
                }
                return;
            }
            // A keep-alive connection the server closed: once more on a new one.
            Err(_) => {
                *conn = None;
                if attempt == 1 {
                    break;
                }
            }
        }
    }
    res.lock().unwrap_or_else(|p| p.into_inner()).errors += 1;
}

/// The agent: acks every message, records when the ones we sent arrived.
async fn agent(
    path: String,
    ids: Arc<HashMap<String, usize>>,
    seen: Arc<Mutex<Vec<(usize, Instant)>>>,
) {
    let mut s = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("open_loop: agent socket {path}: {e}");
            return;
        }
    };
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let at = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        let mut acks = Vec::new();
        let mut start = 0;
        while let Some(p) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + p];
            start += p + 1;
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            if v.get("type").and_then(|t| t.as_str()) != Some("message") {
                continue;
            }
            let Some(id) = v.get("id").and_then(|t| t.as_str()) else {
                continue;
            };
            if let Some(&i) = ids.get(id) {
                seen.lock().unwrap_or_else(|p| p.into_inner()).push((i, at));
            }
            acks.extend_from_slice(
                format!(
                    "{{\"type\":\"ack\",\"id\":{}}}\n",
                    serde_json::Value::from(id)
                )
                .as_bytes(),
            );
        }
        buf.drain(..start);
        if !acks.is_empty() && s.write_all(&acks).await.is_err() {
            return;
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[k.clamp(1, sorted.len()) - 1]
}

fn summary(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(|a, b| a.total_cmp(b));
    let r = |v: f64| (v * 1000.0).round() / 1000.0;
    serde_json::json!({
        "n": ms.len(),
        "p50_ms": r(pct(&ms, 50.0)),
        "p90_ms": r(pct(&ms, 90.0)),
        "p99_ms": r(pct(&ms, 99.0)),
        "p999_ms": r(pct(&ms, 99.9)),
        "max_ms": r(ms.last().copied().unwrap_or(f64::NAN)),
    })
}

fn main() {
    let a = parse_args();
    let closed = a.rate <= 0.0;
    let n = if closed {
        a.count
    } else {
        Some(a.count.unwrap_or((a.rate * a.seconds).round() as usize))
    };
    let (reqs, sids) = load(&a, n);
    let n = reqs.len();
    let reqs = Arc::new(reqs);
    let ids: Arc<HashMap<String, usize>> =
        Arc::new(sids.into_iter().enumerate().map(|(i, s)| (s, i)).collect());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => usage(&format!("runtime: {e}")),
    };
    let res = Arc::new(Mutex::new(Results::default()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let period = if closed {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(1.0 / a.rate)
    };
    let (start, elapsed) = rt.block_on(async {
        if let Some(path) = a.agent.clone() {
            tokio::spawn(agent(path, ids.clone(), seen.clone()));
            // Let it connect before the first webhook.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        if closed {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..a.conns {
                let (reqs, res, next, addr) =
                    (reqs.clone(), res.clone(), next.clone(), a.addr.clone());
                tasks.push(tokio::spawn(async move {
                    let mut conn = None;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= reqs.len() {
                            return;
                        }
                        one(&addr, &mut conn, &reqs[i], i, Instant::now(), &res).await;
                    }
                }));
            }
        } else {
            let (tx, rx) = mpsc::unbounded_channel::<usize>();
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            for _ in 0..a.conns {
                let (reqs, res, rx, addr) = (reqs.clone(), res.clone(), rx.clone(), a.addr.clone());
                tasks.push(tokio::spawn(async move {
                    let mut conn = None;
                    loop {
                        let Some(i) = rx.lock().await.recv().await else {
                            return;
                        };
                        let scheduled = start + period * i as u32;
                        one(&addr, &mut conn, &reqs[i], i, scheduled, &res).await;
                    }
                }));
            }
            for i in 0..n {
                let at = start + period * i as u32;
                if at > Instant::now() {
                    tokio::time::sleep_until(at.into()).await;
                }
                if tx.send(i).is_err() {
                    break;
                }
            }
            drop(tx);
        }
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
        }
        let elapsed = start.elapsed();
        if a.agent.is_some() {
            // The last messages reach the agent after their 200.
            let deadline = Instant::now() + Duration::from_secs(10);
            while seen.lock().unwrap_or_else(|p| p.into_inner()).len() < n
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        (start, elapsed)
    });
    let res = res.lock().unwrap_or_else(|p| p.into_inner());
    let skip = if closed {
        0
    } else {
        (a.warmup * a.rate) as usize
    };
    let counted = |i: usize| i >= skip;
    let ok_ms: Vec<f64> = res
        .answered
        .iter()
        .filter(|(i, _)| counted(*i))
        .map(|(_, d)| d.as_secs_f64() * 1e3)
        .collect();
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let agent_ms: Vec<f64> = seen
        .iter()
        .filter(|(i, _)| counted(*i))
        .map(|(i, at)| (at.duration_since(start + period * *i as u32)).as_secs_f64() * 1e3)
        .collect();
    let answered = res.answered.len();
    let out = serde_json::json!({
        "mode": if closed { "closed" } else { "open" },
        "rate": a.rate,
        "conns": a.conns,
        "sent": n,
        "answered_200": answered,
        "non200": res.non200,
        "errors": res.errors,
        "unanswered": n - answered - res.non200 - res.errors,
        "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "achieved_rps": (answered as f64 / elapsed.as_secs_f64()).round(),
        "warmup_requests": skip,
        "webhook_to_200": summary(ok_ms),
        "webhook_to_agent": if a.agent.is_some() && !closed { summary(agent_ms) } else { serde_json::Value::Null },
        "agent_seen": seen.len(),
    });
    let w = &out["webhook_to_200"];
    eprintln!(
        "{} loop, {} conns{}: {answered}/{n} 200s in {:.2} s, webhook -> 200 p50 {} ms p99 {} ms p99.9 {} ms",
        out["mode"].as_str().unwrap_or(""),
        a.conns,
        if closed { String::new() } else { format!(", {} /s", a.rate) },
        elapsed.as_secs_f64(),
        w["p50_ms"],
        w["p99_ms"],
        w["p999_ms"]
    );
    println!("OPENLOOP {out}");
}
