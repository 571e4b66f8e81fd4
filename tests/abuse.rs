//! Abuse: floods, slow and idle connections, and people trying to make us pay for
//! texts. The daemon keeps serving valid webhooks, memory and logs stay bounded.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_flood_keeps_valid_webhooks_served_and_logs_bounded() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let gw = Gateway::start(&t.config(&twilio, r#"dmPolicy: "open", allowFrom: ["*"]"#));
    let url = gw.url("/webhooks/sms");
    let started = Instant::now();
    let flood: Vec<_> = (0..16)
        .map(|w| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = client();
                let mut n403 = 0;
                for i in 0..150 {
                    let p = inbound("SMf00d0000000000000000000000000000", "+15557654321", "spam");
                    let sig = if i % 2 == 0 {
                        "bogus".to_string()
                    } else {
                        format!("sig{w}{i}")
                    };
                    let r = c
                        .post(&url)
                        .header("X-Twilio-Signature", sig)
                        .body(form(&p))
                        .send()
                        .await
                        .unwrap();
                    n403 += usize::from(r.status().as_u16() == 403);
                }
                n403
            })
        })
        .collect();
    // Valid webhooks during the flood.
    for i in 0..20 {
        let sid = format!("SMa{i:031}");
        assert_eq!(
            post_signed(&gw, "/webhooks/sms", &inbound(&sid, "+15557654321", "real"))
                .await
                .0,
            200
        );
    }
    let mut total = 0;
    for f in flood {
        total += f.await.unwrap();
    }
    assert_eq!(total, 16 * 150);
    let secs = started.elapsed().as_secs() + 2;
    let lines = gw
        .log()
        .lines()
        .filter(|l| l.contains("webhook: 403"))
        .count() as u64;
    assert!(
        lines <= secs * 20,
        "{lines} log lines for {total} rejected requests in ~{secs}s"
    );
    assert!(rss_kib(gw.child.id()) < 64 * 1024);
    assert_eq!(gw.stop().code(), Some(0));
    let store = smsgate::store::Store::open(&t.state()).unwrap();
    assert_eq!(store.inbox().unwrap().len(), 20);
    assert!(
        store.rejected().unwrap().is_empty(),
        "unsigned requests write nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_stranger_flooding_and_repeated_pairing_cost_at_most_three_texts() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = t.config(&twilio, "");
    let gw = Gateway::start(&config);
    let who = "+15557659999";
    for i in 0..40 {
        let sid = format!("SMb{i:031}");
        assert_eq!(
            post_signed(&gw, "/webhooks/sms", &inbound(&sid, who, "let me in"))
                .await
                .0,
            200
        );
    }
    twilio.wait_sends(1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(twilio.sends().len(), 1, "one code however many messages");
    // Reject and ask again, over and over: the per-number budget stops the texts.
    for round in 0..4 {
        let list: serde_json::Value =
            serde_json::from_slice(&cli(&config, &["pairing", "list", "--json"]).stdout).unwrap();
        let code = list[0]["code"].as_str().unwrap().to_string();
        assert!(cli(&config, &["pairing", "reject", &code]).status.success());
        let sid = format!("SMc{round:031}");
        assert_eq!(
            post_signed(&gw, "/webhooks/sms", &inbound(&sid, who, "again"))
                .await
                .0,
            200
        );
        assert!(gw.wait_log(&format!("SMc{round:031}"), Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        twilio.sends_to(who).len(),
        3,
        "at most 3 pairing texts per number per day"
    );
    assert!(gw.log().contains("SMS cost limit"));
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_are_closed_and_slowloris_does_not_block() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = t.config(&twilio, r#"dmPolicy: "open", allowFrom: ["*"]"#);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("stateDir:", "maxConnections: 20, stateDir:");
    std::fs::write(&config, text).unwrap();
    let gw = Gateway::start(&config);
    // Slowloris: 10 connections trickling headers.
    let mut slow: Vec<std::net::TcpStream> = (0..10)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
            s.write_all(b"POST /webhooks/sms HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    assert_eq!(
        post_signed(
            &gw,
            "/webhooks/sms",
            &inbound("SMd0000000000000000000000000000001", "+15557654321", "ok")
        )
        .await
        .0,
        200
    );
    // 200 idle connections: beyond the cap of 20 they are closed at once.
    let idle: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(gw.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let closed = idle
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let mut b = [0u8; 1];
            matches!((&**s).read(&mut b), Ok(0) | Err(_)) && {
                let mut probe = [0u8; 1];
                s.set_nonblocking(true).unwrap();
                let gone = matches!((&**s).read(&mut probe), Ok(0));
                s.set_nonblocking(false).unwrap();
                gone
            }
        })
        .count();
    assert!(
        closed >= 170,
        "only {closed} of 200 connections beyond the cap were closed"
    );
    assert!(gw.log().contains("gateway.maxConnections reached"));
    drop(idle);
    for s in &mut slow {
        let _ = s.write_all(b"X-Slow: 1\r\n");
    }
    drop(slow);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        post_signed(
            &gw,
            "/webhooks/sms",
            &inbound("SMd0000000000000000000000000000002", "+15557654321", "ok")
        )
        .await
        .0,
        200
    );
    assert!(rss_kib(gw.child.id()) < 64 * 1024);
    assert_eq!(gw.stop().code(), Some(0));
}
