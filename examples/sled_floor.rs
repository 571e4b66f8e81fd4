//! Benchmark floor: bare hyper plus the sled work one webhook costs smsgate, and
//! nothing else. The HTTP side is `bare_hyper`'s (`examples/common/http.rs`); each request's body goes to one
//! writer thread, which does what smsgate's store writer does for a message on the
//! benchmark's load (every message from a new sender), collected over all the requests
//! waiting: two reads (the SID's dedupe bucket, the sender's conversation), three
//! inserts (the bucket rewritten with one more mark, the inbox entry, the new
//! conversation id) and, one round later, the agent's ack (the inbox entry's removal);
//! one `apply_batch` and one flush a round, then every request of the round is answered
//! 200. The store's sled configuration (`smsgate::store::sled_config`), bucket hash
//! and codec (`smsgate::store::dedupe`) and key layout (one tree, a one-byte area
//! prefix).
//!
//! No signature check, no form parsing, no access decision, no agent socket, no log
//! line: so `bench/run` can show, in the same run, how much of smsgate's CPU per
//! webhook sled with a group-commit writer (its thread hand-offs and fsyncs included)
//! and hyper take by themselves, and how much is smsgate's own. `GET /metrics` gives
//! the rounds (fsyncs) and requests answered under smsgate's metric names, so the
//! report shows its webhooks per fsync next to smsgate's.
//!
//! `cargo run --release --example sled_floor -- PORT DIR` (PORT 0: any free port; DIR
//! on a real disk, must not exist: it is created). Prints `listening on
//! 127.0.0.1:PORT` once bound.

#[path = "common/http.rs"]
mod http;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use smsgate::store::dedupe;
use tokio::sync::oneshot;

/// Requests applied under one fsync at most, as the store writer's `MAX_BATCH`.
const MAX_BATCH: usize = 4096;

type Job = (Bytes, oneshot::Sender<bool>);

/// Rounds (each one `apply_batch` and one flush) and requests answered 200.
#[derive(Default)]
struct Counts {
    rounds: AtomicU64,
    stored: AtomicU64,
}

/// The SID in a form body (`MessageSid=...`), or the whole body if it has none.
fn sid_of(body: &[u8]) -> &[u8] {
    const NAME: &[u8] = b"MessageSid=";
    body.windows(NAME.len())
        .position(|w| w == NAME)
        .map(|i| {
            let rest = &body[i + NAME.len()..];
            &rest[..rest.iter().position(|&b| b == b'&').unwrap_or(rest.len())]
        })
        .unwrap_or(body)
}

fn writer(
    db: sled::Db,
    tree: sled::Tree,
    rx: mpsc::Receiver<Job>,
    counts: Arc<Counts>,
) -> sled::Result<()> {
    let mut acks: Vec<[u8; 9]> = Vec::new();
    let mut n = 0u64;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut batch = sled::Batch::default();
        // The agent acked the previous round's messages: their inbox entries go.
        for k in acks.drain(..) {
            batch.remove(&k[..]);
        }
        for (body, _) in &jobs {
            n += 1;
            let sid = sid_of(body);
            let number = format!("+1555{:07}", n % 10_000_000);
            // The store's own bucket hash and codec (`src/store/dedupe.rs`), under the
            // dedupe area's tag.
            let [hi, lo] = dedupe::bucket_of(sid);
            let bucket_key = [b'S', hi, lo];
            let conversation_key = format!("cdefault\0{number}");
            let bucket = tree.get(bucket_key)?.unwrap_or_default();
            let _ = tree.get(conversation_key.as_bytes())?;
            // The mark's value: the time, then the reply route.
            let mut mark = n.to_be_bytes().to_vec();
            mark.extend_from_slice(format!("default\0{number}").as_bytes());
            if let Ok(bucket) = dedupe::with(&bucket, sid, &mark) {
                batch.insert(&bucket_key[..], bucket);
            }
            let mut inbox = [b'i'; 9];
            inbox[1..].copy_from_slice(&n.to_be_bytes());
            // The inbox entry: the message for the agent, as long as its JSON on this
            // load (~268 bytes).
            batch.insert(&inbox[..], &body[..body.len().min(268)]);
            batch.insert(
                conversation_key.as_bytes(),
                format!("c-{:024x}", n).as_bytes(),
            );
            acks.push(inbox);
        }
        let ok = tree.apply_batch(batch).and_then(|()| db.flush()).is_ok();
        counts.rounds.fetch_add(1, Ordering::Relaxed);
        if ok {
            counts
                .stored
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        }
        for (_, done) in jobs {
            let _ = done.send(ok);
        }
    }
    Ok(())
}

async fn answer(
    tx: mpsc::Sender<Job>,
    counts: Arc<Counts>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/metrics" {
        // smsgate's names, so bench/lib/report.py reads them as it does smsgate's.
        let text = format!(
            "smsgate_webhooks_total{{status=\"200\"}} {}\nsmsgate_store_flush_seconds_count {}\n",
            counts.stored.load(Ordering::Relaxed),
            counts.rounds.load(Ordering::Relaxed)
        );
        return Ok(Response::new(Full::new(Bytes::from(text))));
    }
    let body = http::read_body(req).await;
    let (done, wait) = oneshot::channel();
    let stored = tx.send((body, done)).is_ok() && wait.await.unwrap_or(false);
    Ok(http::twiml(if stored {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().unwrap_or_default().parse().unwrap_or(0);
    let Some(dir) = args.next().map(std::path::PathBuf::from) else {
        anyhow::bail!("usage: sled_floor PORT DIR (DIR must not exist)");
    };
    // Never anything that is there already (it could be a real store).
    std::fs::create_dir(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e} (give a new path)", dir.display()))?;
    let db = smsgate::store::sled_config(&dir).open()?;
    let tree = db.open_tree("data")?;
    let (tx, rx) = mpsc::channel::<Job>();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            if let Err(e) = writer(db, tree, rx, c) {
                eprintln!("writer: {e}");
            }
        })?;
    http::serve(port, move |req| answer(tx.clone(), counts.clone(), req))?;
    Ok(())
}
