//! The webhook listener under a slow-body flood from many addresses, behind trusted
//! proxies, and what a 403 or a near-miss 404 tells the operator (issue 20 item 1 and
//! the trustedProxies item; issue 24 item 5; CONTRACT §11).

use crate::abuse::{raise_fd_limit, with_max_connections};
use crate::common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Twilio's side of the target: each signed webhook answered within this.
const PER_REQUEST: Duration = Duration::from_secs(5);

/// One attacker address: connects from `local`, sends valid headers for the webhook
/// path with a bogus signature, then trickles the body a byte a second; whenever the
/// gateway closes the connection it connects again at once, so the cap stays full.
async fn trickler(
    local: SocketAddr,
    gw: SocketAddr,
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicUsize>,
    first: Arc<AtomicBool>,
) {
    let head = b"POST /webhooks/sms HTTP/1.1\r\nHost: sms.example.test\r\n\
Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: bogus\r\n\
Content-Length: 2000\r\n\r\n";
    while !stop.load(Ordering::SeqCst) {
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            continue;
        };
        let _ = socket.set_reuseaddr(true);
        if socket.bind(local).is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let Ok(mut s) = socket.connect(gw).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if s.write_all(head).await.is_err() {
            continue;
        }
        if !first.swap(true, Ordering::SeqCst) {
            connected.fetch_add(1, Ordering::SeqCst);
        }
        let mut buf = [0u8; 512];
        // The attack's own pace (a byte a second), not a wait for readiness.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => break, // answered (408/403): the request is over
                },
                _ = tick.tick() => {
                    if s.write_all(b"a").await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_body_flood_from_64_addresses_does_not_keep_signed_webhooks_out() {
    raise_fd_limit();
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = t.config(&twilio, r#"dmPolicy: "open", allowFrom: ["*"]"#);
    // The attack's shape at a cheaper size: the cap is exactly as many as the
    // attacking addresses, each holding one trickling request.
    with_max_connections(&config, 64);
    let gw = Gateway::start(&config);

    // An agent that takes every message and acknowledges it.
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop_agent = Arc::new(AtomicBool::new(false));
    let agent = {
        let (seen, stop) = (seen.clone(), stop_agent.clone());
        let mut agent = TestAgent::connect(&t.state().join("agent.sock"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(m) = agent.next_within(Duration::from_millis(200)) {
                    if m["type"] == "message" {
                        let id = m["id"].as_str().unwrap_or_default().to_string();
                        agent.send(json!({"type": "ack", "id": id}));
                        seen.lock().unwrap().insert(id);
                    }
                }
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (2..66u8)
        .map(|i| {
            let local: SocketAddr = format!("127.0.0.{i}:0").parse().unwrap();
            tokio::spawn(trickler(
                local,
                gw.addr,
                stop.clone(),
                connected.clone(),
                Arc::new(AtomicBool::new(false)),
            ))
        })
        .collect();
    // Ready when every address holds a request mid-body: the cap is full.
    assert!(
        wait_until(Duration::from_secs(20), || connected.load(Ordering::SeqCst)
            == 64),
        "only {} attackers connected",
        connected.load(Ordering::SeqCst)
    );

    // Twilio: 5 signed webhooks a second for 10 s, each on a fresh connection.
    let mut posts = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    for i in 0..50 {
        tick.tick().await;
        let url = gw.url("/webhooks/sms");
        posts.push(tokio::spawn(async move {
            let sid = format!("SMf1{i:030}");
            // One sender each: the per-sender inbound limit (30 a minute) is not
            // what this measures.
            let from = format!("+1555760{i:04}");
            let p = inbound(&sid, &from, "through the trickle");
            let c = reqwest::Client::builder()
                .timeout(PER_REQUEST)
                .build()
                .unwrap();
            let started = Instant::now();
            let status = c
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("X-Twilio-Signature", sign(TOKEN, PUBLIC, &p))
                .body(form(&p))
                .send()
                .await
                .map_or(0, |r| r.status().as_u16());
            (sid, status, started.elapsed())
        }));
    }
    let mut ok = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut failed = Vec::new();
    for p in posts {
        let (sid, status, took) = p.await.unwrap();
        slowest = slowest.max(took);
        if status == 200 && took < PER_REQUEST {
            ok.push(sid);
        } else {
            failed.push((status, took));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for a in attackers {
        a.abort();
    }
    eprintln!(
        "measured: {} of 50 signed webhooks got 200 within 5 s behind 64 trickling addresses (cap 64); slowest {slowest:?}; failures {failed:?}",
        ok.len()
    );
    assert!(
        ok.len() * 100 >= 50 * 95,
        "{} of 50 signed webhooks got 200 within 5 s; the cap's lines:\n{}",
        ok.len(),
        gw.log()
            .lines()
            .filter(|l| l.contains("maxConnections"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every one admitted reaches the agent.
    let arrived = wait_until(Duration::from_secs(20), || {
        let seen = seen.lock().unwrap();
        ok.iter().all(|sid| seen.contains(sid))
    });
    stop_agent.store(true, Ordering::SeqCst);
    assert!(agent.join().is_ok(), "the test agent failed");
    assert!(
        arrived,
        "{} of {} admitted webhooks reached the agent",
        ok.iter()
            .filter(|s| seen.lock().unwrap().contains(*s))
            .count(),
        ok.len()
    );
    assert_eq!(gw.stop().code(), Some(0));
}
