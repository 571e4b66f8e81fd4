//! Nothing lost: a 200 means the message is on disk, whatever happens next.

use crate::common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_right_after_200_loses_nothing() {
    let (t, _twilio, config) = configured(r#"dmPolicy: "allowlist", allowFrom: ["+15557654321"]"#);
    let mut acked = Vec::new();
    for round in 0..3 {
        let gw = Gateway::start(&config);
        // Concurrent webhooks, then SIGKILL the moment the last 200 arrives.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let sid = format!("SM8{round}{i:030}");
            let p: Vec<(String, String)> = inbound(&sid, "+15557654321", "durable")
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let (url, sig, body) = (
                gw.url("/webhooks/sms"),
                sign(TOKEN, PUBLIC, &refs),
                form(&refs),
            );
            tasks.push(tokio::spawn(async move {
                let status = post_raw(url, vec![("X-Twilio-Signature", sig)], body).await;
                (sid, status)
            }));
        }
        for task in tasks {
            let (sid, status) = task.await.unwrap();
            assert_eq!(status, 200);
            acked.push(sid);
        }
        gw.kill9();
    }
    // Restart: everything admitted is processed; the store opens cleanly.
    let gw = Gateway::start(&config);
    let store_ids = || {
        let mut ids = t.inbox_ids();
        ids.sort();
        ids
    };
    assert!(gw.wait_log("smsgate ready", Duration::from_secs(5)));
    assert_eq!(gw.stop().code(), Some(0));
    acked.sort();
    assert_eq!(
        store_ids(),
        acked,
        "every acknowledged message reached the agent inbox exactly once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_with_a_spooled_pairing_request_texts_once_after_restart() {
    let (_t, twilio, config) = configured("");
    // Twilio is slow: the send is in flight when we kill.
    twilio.push(Canned::Hang);
    let gw = Gateway::start(&config);
    assert_eq!(
        gw.admit("SM90000000000000000000000000000001", "+15557654321", "hi")
            .await,
        200
    );
    assert!(wait_until(Duration::from_secs(5), || twilio.sends().len() == 1));
    gw.kill9();
    let gw = Gateway::start(&config);
    gw.assert_log_soon("outcome is unknown", Duration::from_secs(5));
    // Nothing queued to send any more: the send of unknown outcome stays unsent.
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert_eq!(
        twilio.sends().len(),
        1,
        "a send that may have gone out is not repeated"
    );
    // The pairing request itself survived.
    let list: serde_json::Value =
        serde_json::from_slice(&cli(&config, &["pairing", "list", "--json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(gw.stop().code(), Some(0));
}

/// An agent on its own thread that reconnects after every restart, replies "re:<id>" to
/// each message, and records every id it was given.
fn replying_agent(
    sock: std::path::PathBuf,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use std::io::{BufRead, BufReader, Write};
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) else {
                // The retry interval of a reconnect loop (the daemon is being killed and
                // restarted on purpose), not a readiness wait: nothing is asserted here.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut line = String::new();
            loop {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        let v: serde_json::Value = match serde_json::from_str(&line) {
                            Ok(v) => v,
                            Err(_) => continue,
                        };
                        if v["type"] == "message" {
                            let id = v["id"].as_str().unwrap().to_string();
                            seen.lock().unwrap().push(id.clone());
                            let reply = serde_json::json!({"type": "reply", "id": id, "text": format!("re:{id}")});
                            if w.write_all(format!("{reply}\n").as_bytes()).is_err() {
                                break;
                            }
                        }
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        continue
                    }
                    Err(_) => break,
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_under_load() {
    use rand::Rng;
    let (t, twilio, config) = configured(OPEN);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let agent = replying_agent(t.state().join("agent.sock"), seen.clone(), stop.clone());
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Ten rounds of random kills against the single writer.
    for _round in 0..10 {
        let gw = Gateway::start(&config);
        let url = gw.url("/webhooks/sms");
        let load: Vec<_> = (0..8)
            .map(|_| {
                let (url, acked, counter) = (url.clone(), acked.clone(), counter.clone());
                tokio::spawn(async move {
                    let c = client();
                    loop {
                        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let sid = format!("SMe{n:031}");
                        let from = format!("+1555770{:04}", n % 50);
                        let p = inbound(&sid, &from, "under load");
                        let sent = c
                            .post(&url)
                            .header("X-Twilio-Signature", sign(TOKEN, PUBLIC, &p))
                            .body(form(&p))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status().as_u16() == 200 => acked.lock().unwrap().push(sid),
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        // The kill comes at a random moment under load: the randomness is the test, not
        // a readiness wait.
        let wait = rand::thread_rng().gen_range(100..400);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        gw.kill9();
        for l in load {
            let _ = l.await;
        }
    }
    let gw = Gateway::start(&config);
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "too little load: {}", acked.len());
    let all_seen = || {
        let seen = seen.lock().unwrap();
        acked.iter().all(|a| seen.contains(a))
    };
    assert!(
        wait_until(Duration::from_secs(20), all_seen),
        "some acknowledged messages never reached the agent"
    );
    // Let the last replies go out (the quiescence barrier: nothing waiting, in flight
    // or queued to send), then check nobody was texted twice for one reply.
    assert!(
        wait_until(Duration::from_secs(20), || agent_queue_empty(&config)),
        "messages left unacknowledged"
    );
    assert!(
        gw.wait_quiet(&config, Duration::from_secs(20)),
        "replies left unsent"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = agent.join();
    assert_eq!(gw.stop().code(), Some(0));
    let mut bodies: Vec<String> = twilio
        .sends()
        .iter()
        .map(|r| r.field("Body").unwrap().to_string())
        .collect();
    let total = bodies.len();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), total, "a reply was sent twice");
    smsgate::store::Store::open(&t.state()).expect("the store opens cleanly");
}

fn agent_queue_empty(config: &std::path::Path) -> bool {
    let out = cli(config, &["channels", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["daemon"]["agentQueue"] == 0
}

/// Issue 20 item 6: a store of the earlier layout (a status key per SID, a sent-log key
/// per send) is migrated and rewritten at start; a kill -9 in the middle of that
/// (at the migration's first line, and again at the rewrite's) loses nothing: the next
/// start finishes it, every status and every logged send is there once, and nothing
/// is left beside `db`.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_the_status_and_sent_log_migration_loses_nothing() {
    const N: u64 = 60_000;
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let now = smsgate::store::now_ms();
    {
        let db = smsgate::store::sled_config(&t.state().join("db"))
            .open()
            .unwrap();
        let data = db.open_tree("data").unwrap();
        let mut b = sled::Batch::default();
        for i in 0..N {
            let mut k = vec![b't'];
            k.extend_from_slice(format!("SM{i:032x}").as_bytes());
            b.insert(
                k,
                serde_json::to_vec(
                    &serde_json::json!({"status": "delivered", "errorCode": null, "at": now}),
                )
                .unwrap(),
            );
            let mut k = b"Ldefault\0".to_vec();
            k.extend_from_slice(&(now - i * 1_000).to_be_bytes());
            k.extend_from_slice(&i.to_be_bytes());
            b.insert(k, serde_json::to_vec(&("+15557650001", 1u32)).unwrap());
        }
        data.apply_batch(b).unwrap();
        db.flush().unwrap();
    }
    let config = t.config(&twilio, "");
    for needle in [
        "moving the delivery statuses into buckets",
        "moved the sent log into per-minute records",
    ] {
        // Started by hand: `Gateway::start` waits for ready, which comes after.
        let mut child = std::process::Command::new(bin())
            .arg("gateway")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("SMSGATE_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut seen = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                break;
            }
        }
        assert!(seen.contains(needle), "{seen}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let gw = Gateway::start(&config);
    let pid = gw.child.id();
    let status = gw.status(&config);
    assert_eq!(status["pid"].as_u64(), Some(u64::from(pid)), "{status}");
    let log = gw.stop_and_log();
    // The start that finished the migration rewrote the store and then replaced itself
    // with a fresh process (same pid) to give the migration's heap back, exactly once.
    assert_eq!(log.matches("starting afresh once").count(), 1, "{log}");
    assert_eq!(log.matches("smsgate ready").count(), 1, "{log}");
    let store = t.store();
    assert_eq!(store.statuses_len(), N as usize);
    assert!(store.is_our_sid(&format!("SM{:032x}", N - 1)).unwrap());
    let mut total = 0;
    store
        .for_each_sent("default", now, 2 * 24 * 3_600_000, |_, _, n| total += n)
        .unwrap();
    assert_eq!(total, N as u32, "every send counted once");
    let names: Vec<_> = std::fs::read_dir(t.state())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("db"))
        .collect();
    assert_eq!(names, ["db"], "no marker, no db.new left");
}
