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
    attack: Attack,
) {
    let head: &[u8] = match attack {
        Attack::Trickle => {
            b"POST /webhooks/sms HTTP/1.1\r\nHost: sms.example.test\r\n\
Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: bogus\r\n\
Content-Length: 2000\r\n\r\n"
        }
        Attack::Silent => b"",
        Attack::Requests => b"",
    };
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
        if attack == Attack::Requests {
            // Complete bogus requests on one keep-alive connection, 20 a second.
            let req = b"POST /webhooks/sms HTTP/1.1\r\nHost: sms.example.test\r\n\
Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: bogus\r\n\
Content-Length: 7\r\n\r\nBody=hi";
            let mut buf = [0u8; 2048];
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                if s.write_all(req).await.is_err() {
                    break;
                }
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            continue;
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
                    if attack == Attack::Trickle && s.write_all(b"a").await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Valid headers, a bogus signature, the body a byte a second.
    Trickle,
    /// Connect and send nothing.
    Silent,
    /// Quick bogus requests, one after another, on a keep-alive connection.
    Requests,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_body_flood_from_64_addresses_does_not_keep_signed_webhooks_out() {
    flood_from_64_addresses(Attack::Trickle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_sockets_from_64_addresses_reconnecting_when_cut_do_not_keep_signed_webhooks_out() {
    flood_from_64_addresses(Attack::Silent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_connections_busy_with_bogus_requests_from_64_addresses_do_not_keep_signed_webhooks_out(
) {
    flood_from_64_addresses(Attack::Requests).await;
}

/// The cap (64) full of `attack` from 127.0.0.2–65, each reconnecting the moment it is
/// closed; signed webhooks at 5/s for 10 s: at least 95 % get 200 within 5 s and
/// every one of those reaches the agent.
async fn flood_from_64_addresses(attack: Attack) {
    raise_fd_limit();
    let (t, _twilio, config) = configured(OPEN);
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
                attack,
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
        "measured: {} of 50 signed webhooks got 200 within 5 s behind 64 addresses ({attack:?}, cap 64); slowest {slowest:?}; failures {failed:?}",
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

// ---- gateway.trustedProxies ------------------------------------------------------

/// `config` with `gateway.trustedProxies` set to `list` (JSON5).
fn with_trusted_proxies(config: &std::path::Path, list: &str) {
    let text = std::fs::read_to_string(config)
        .unwrap()
        .replace("stateDir:", &format!("trustedProxies: {list}, stateDir:"));
    std::fs::write(config, text).unwrap();
}

/// Posts `params` signed for `signed_url` to the gateway with extra `headers`; the
/// status and body.
async fn post_signed_as(
    gw: &Gateway,
    path: &str,
    signed_url: &str,
    token: &str,
    params: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = client()
        .post(gw.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", sign(token, signed_url, params))
        .body(form(params));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

const FORWARDED: &[(&str, &str)] = &[
    ("X-Forwarded-For", "203.0.113.77"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "gw.example.org"),
];

/// What the 403 body has always said, and all it says.
const BODY_403: &str = "X-Twilio-Signature does not match (check publicWebhookUrl: it must be byte for byte the URL configured in Twilio)\n";

/// Holds connections from 127.0.0.1 that sent headers forwarded for 203.0.113.77 and
/// trickle a body, one more each round, until the cap closes one and says whose.
fn evicted_line(gw: &Gateway) -> String {
    let mut held = Vec::new();
    let found = wait_until(Duration::from_secs(20), || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
        let _ = s.write_all(
            b"POST /webhooks/sms HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.77\r\nContent-Length: 500\r\n\r\nBody=a",
        );
        held.push(s);
        gw.log().contains("closed a connection of")
    });
    assert!(found, "no eviction; log:\n{}", gw.log());
    gw.log()
        .lines()
        .find(|l| l.contains("closed a connection of"))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxys_forwarded_client_is_the_one_limited_and_logged() {
    let (_t, _twilio, config) = configured(OPEN);
    with_trusted_proxies(&config, r#"["10.0.0.0/8", "127.0.0.1"]"#);
    with_max_connections(&config, 4);
    let gw = Gateway::start(&config);
    // The forwarded URL is what the 403 compares with, the forwarded client is logged.
    let p = inbound("SMf2000000000000000000000000000001", "+15557654321", "hi");
    let (status, body) = post_signed_as(
        &gw,
        "/webhooks/sms",
        "https://gw.example.org/webhooks/sms",
        TOKEN,
        &p,
        FORWARDED,
    )
    .await;
    assert_eq!((status, body.as_str()), (403, BODY_403));
    assert!(gw.wait_log("the URL Twilio called", Duration::from_secs(5)));
    let line = gw
        .log()
        .lines()
        .find(|l| l.contains("webhook: 403"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("\"https://gw.example.org/webhooks/sms\", the URL Twilio called")
            && line.contains("channels.sms.publicWebhookUrl is wrong")
            && line.contains("client=203.0.113.77"),
        "{line}"
    );
    // The cap counts a proxied connection as its client.
    let line = evicted_line(&gw);
    assert!(
        line.contains("closed a connection of 203.0.113.77"),
        "{line}"
    );
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let (_t, _twilio, config) = configured(OPEN);
    // Trusted proxies exist, but the test's address is not one of them.
    with_trusted_proxies(&config, r#"["10.0.0.0/8"]"#);
    with_max_connections(&config, 4);
    let gw = Gateway::start(&config);
    let p = inbound("SMf2000000000000000000000000000002", "+15557654321", "hi");
    let (status, body) = post_signed_as(
        &gw,
        "/webhooks/sms",
        "https://gw.example.org/webhooks/sms",
        TOKEN,
        &p,
        FORWARDED,
    )
    .await;
    assert_eq!((status, body.as_str()), (403, BODY_403));
    assert!(gw.wait_log("webhook: 403", Duration::from_secs(5)));
    let log = gw.log();
    let line = log.lines().find(|l| l.contains("webhook: 403")).unwrap();
    // The forwarded host is not believed, so nothing built from the request matches.
    assert!(
        line.contains("auth token is likely wrong") && line.contains("client=127.0.0.1"),
        "{line}"
    );
    assert!(
        !line.contains("203.0.113.77") && !line.contains("gw.example.org/"),
        "{line}"
    );
    let line = evicted_line(&gw);
    assert!(line.contains("closed a connection of 127.0.0.1"), "{line}");
    assert!(!gw.log().contains("203.0.113.77"));
    assert_eq!(gw.stop().code(), Some(0));
}

#[test]
fn trusted_proxies_are_validated_with_their_key_path() {
    let (t, twilio, config) = configured("");
    with_trusted_proxies(
        &config,
        r#"["10.0.0.0/8", "proxy.example.com", "10.0.0.0/40"]"#,
    );
    let out = cli(&config, &["config", "validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("gateway.trustedProxies[1]"), "{err}");
    assert!(err.contains("gateway.trustedProxies[2]"), "{err}");
    assert!(!err.contains("gateway.trustedProxies[0]"), "{err}");
    with_trusted_proxies(&t.config(&twilio, ""), r#""10.0.0.1""#);
    let err = stderr(&cli(&config, &["config", "validate"]));
    assert!(err.contains("gateway.trustedProxies"), "{err}");
    with_trusted_proxies(&t.config(&twilio, ""), r#"["10.0.0.1", "fd00::/8"]"#);
    let out = cli(&config, &["config", "show", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown["gateway"]["trustedProxies"],
        json!(["10.0.0.1/32", "fd00::/8"])
    );
}

// ---- what a 403 or a near-miss 404 says (CONTRACT §11) ---------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_403_names_the_wrong_public_url_and_what_twilio_called() {
    let (_t, _twilio, _, gw) = gateway(OPEN);
    // Twilio was pointed straight at the gateway, publicWebhookUrl says otherwise.
    let called = gw.url("/webhooks/sms");
    let p = inbound("SMf3000000000000000000000000000001", "+15557654321", "hi");
    let (status, body) = post_signed_as(&gw, "/webhooks/sms", &called, TOKEN, &p, &[]).await;
    assert_eq!((status, body.as_str()), (403, BODY_403));
    assert!(gw.wait_log("webhook: 403", Duration::from_secs(5)));
    let log = gw.log();
    let line = log.lines().find(|l| l.contains("webhook: 403")).unwrap();
    assert!(
        line.contains(&format!("checked against \"{PUBLIC}\"")),
        "{line}"
    );
    assert!(
        line.contains(&format!("\"{called}\", the URL Twilio called"))
            && line.contains("channels.sms.publicWebhookUrl is wrong"),
        "{line}"
    );
    assert!(!line.contains(TOKEN));
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_403_with_no_url_matching_says_the_token_is_likely_wrong() {
    let (_t, _twilio, _, gw) = gateway(OPEN);
    let p = inbound("SMf3000000000000000000000000000002", "+15557654321", "hi");
    let (status, body) =
        post_signed_as(&gw, "/webhooks/sms", PUBLIC, "some-other-token", &p, &[]).await;
    assert_eq!((status, body.as_str()), (403, BODY_403));
    assert!(gw.wait_log("webhook: 403", Duration::from_secs(5)));
    let log = gw.log();
    let line = log.lines().find(|l| l.contains("webhook: 403")).unwrap();
    assert!(
        line.contains(&format!("checked against \"{PUBLIC}\""))
            && line.contains("the auth token is likely wrong")
            && line.contains("or a proxy changed the body"),
        "{line}"
    );
    assert!(!line.contains("some-other-token") && !line.contains(TOKEN));
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_a_slash_or_a_case_away_from_the_webhook_path_is_404_naming_the_path() {
    let (_t, _twilio, _, gw) = gateway(OPEN);
    for (i, path) in ["/webhooks/sms/", "/Webhooks/SMS"].iter().enumerate() {
        let sid = format!("SMf4{i:030}");
        let (status, _) = post_signed(&gw, path, &inbound(&sid, "+15557654321", "hi")).await;
        assert_eq!(status, 404, "{path}");
        let needle = format!("`{path}` differs from account default's webhookPath `/webhooks/sms`");
        gw.assert_log_soon(&needle, Duration::from_secs(5));
    }
    // A path that is simply elsewhere says nothing of the kind.
    let (status, _) = post_signed(
        &gw,
        "/other",
        &inbound("SMf4000000000000000000000000000009", "+15557654321", "hi"),
    )
    .await;
    assert_eq!(status, 404);
    assert!(gw.wait_log(
        "webhook: 404 no webhook at this path",
        Duration::from_secs(5)
    ));
    assert!(!gw.log().contains("\"/other\" differs"));
    assert_eq!(gw.stop().code(), Some(0));
}
