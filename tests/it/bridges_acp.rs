//! `smsgate agent acp` end to end: the real daemon, the real bridge binary, and a real
//! ACP agent built on the official TypeScript SDK (tests/support/acp_agent.mjs).

use crate::bridges;
use crate::common;

use std::time::Duration;

use bridges::*;
use common::*;

const A: &str = "+15557650001";
const B: &str = "+15557650002";
const C: &str = "+15557650003";
const D: &str = "+15557650004";
const E: &str = "+15557650005";
const F: &str = "+15557650006";
const G: &str = "+15557650007";

/// The bridge's "turn failed" line for the sender `from` (waits for it).
fn failed_turn(bridge: &Bridge, from: &str, timeout: Duration) -> String {
    let tag = format!("from=***{}", &from[from.len() - 4..]);
    let find = || {
        bridge
            .log()
            .lines()
            .find(|l| l.contains("turn failed") && l.contains(&tag))
            .map(String::from)
    };
    assert!(
        wait_until(timeout, || find().is_some()),
        "no failed turn from {tag} within {timeout:?}; bridge log:\n{}",
        bridge.log()
    );
    let line = find().unwrap();
    assert!(line.contains("WARN"), "{line}");
    line
}

/// The senders of the texts still in the daemon's inbox (sorted; the daemon stopped).
fn waiting_from(t: &TestDir) -> Vec<String> {
    let mut from: Vec<String> = t
        .store()
        .inbox()
        .unwrap()
        .into_iter()
        .map(|(_, m)| m.from.to_string())
        .collect();
    from.sort();
    from
}

fn info_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains(" INFO ")).count()
}

impl Setup {
    /// The ACP test agent's events.
    fn events(&self) -> Events {
        Events(self.t.path().join("agent").join("events.jsonl"))
    }

    /// `smsgate agent acp` on this daemon, running the ACP test agent.
    fn acp(&self, extra: &[&str], env: &[(&str, &str)]) -> Bridge {
        let mut args = self.bridge_args("acp");
        args.extend(["--cwd".into(), s(self.t.path())]);
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push("--".into());
        args.extend(acp_agent_command());
        let dir = s(&self.t.path().join("agent"));
        let mut env: Vec<(&str, &str)> = env.to_vec();
        env.push(("ACP_AGENT_DIR", &dir));
        let b = Bridge::start(&args, &env);
        assert!(
            b.wait_log("is running", Duration::from_secs(30)),
            "the ACP agent did not start; bridge log:\n{}",
            b.log()
        );
        b
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_separation_permissions_and_restart_with_session_load() {
    let st = setup();
    let bridge = st.acp(&["--coalesce", "0"], &[]);
    let init = st.events().wait("initialize", 1, Duration::from_secs(10));
    assert_eq!(
        init["params"]["clientCapabilities"]["fs"],
        serde_json::json!({"readTextFile": false, "writeTextFile": false})
    );
    assert_eq!(init["params"]["clientCapabilities"]["terminal"], false);

    // Memory within a conversation.
    st.text(A, "hello").await;
    let r = st.sms(A, 1);
    assert_eq!(r, "[1] heard: hello | earlier: nothing");
    st.text(A, "again").await;
    assert_eq!(st.sms(A, 2), "[2] heard: again | earlier: hello");
    // Another sender is another session.
    st.text(B, "hi").await;
    assert_eq!(st.sms(B, 1), "[1] heard: hi | earlier: nothing");
    let new = st.events().of("new");
    assert_eq!(new.len(), 2);
    assert_eq!(new[0]["cwd"], s(st.t.path()));
    assert_eq!(new[0]["mcpServers"], serde_json::json!([]));

    // Permission requests are rejected by default.
    st.text(A, "PERMISSION to write?").await;
    assert_eq!(st.sms(A, 3), "permission: no");
    assert!(bridge.log().contains("rejected (--permissions deny)"));

    // Restart: the conversation continues through session/load, and the replayed
    // history is not texted.
    assert_eq!(bridge.stop().code(), Some(0));
    let bridge = st.acp(&["--coalesce", "0", "--permissions", "allow"], &[]);
    st.text(A, "after restart").await;
    let r = st.sms(A, 4);
    assert_eq!(
        r,
        "[4] heard: after restart | earlier: hello / again / PERMISSION to write?"
    );
    let loads = st.events().of("load");
    assert_eq!(loads.len(), 1, "{loads:?}");
    assert_eq!(loads[0]["found"], true);
    assert_eq!(st.twilio.sends_to(A).len(), 4, "the replay was texted");
    assert!(bridge
        .log()
        .contains("reopened its ACP session with session/load"));

    // Allowed with the flag: allow-once, never allow-always.
    st.text(A, "PERMISSION again").await;
    assert_eq!(st.sms(A, 5), "permission: yes-once");

    // The turn log names the conversation (number redacted), duration and sizes,
    // not the text.
    let log = bridge.log();
    assert!(log.contains("conversation=c-"), "{log}");
    assert!(!log.contains("after restart"), "{log}");
    assert!(!log.contains(A), "{log}");
    assert_eq!(bridge.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_load_session_a_restart_starts_a_new_session() {
    let st = setup();
    let bridge = st.acp(&["--coalesce", "0"], &[("ACP_NO_LOAD", "1")]);
    st.text(A, "hello").await;
    st.sms(A, 1);
    assert_eq!(bridge.stop().code(), Some(0));
    let bridge = st.acp(&["--coalesce", "0"], &[("ACP_NO_LOAD", "1")]);
    st.text(A, "hello again").await;
    assert_eq!(st.sms(A, 2), "[1] heard: hello again | earlier: nothing");
    assert!(st.events().of("load").is_empty());
    assert!(bridge.log().contains("does not offer loadSession"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_crash_timeout_garbage_flood_and_silence() {
    let st = setup();
    let bridge = st.acp(
        &["--coalesce", "0", "--timeout", "2", "--max-chars", "300"],
        &[],
    );

    // kill -9 mid-turn: the agent is restarted and the text still answered.
    st.text(A, "DIEONCE please").await;
    let hanging = st.events().wait("hanging", 1, Duration::from_secs(20));
    let pid = hanging["pid"].as_u64().unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let r = nth_sms(&st.twilio, A, 1, Duration::from_secs(30));
    assert_eq!(r, "[1] heard: DIEONCE please | earlier: nothing");
    assert!(bridge.log().contains("went away during this turn"));
    assert!(st.events().of("start").len() >= 2);

    // A crash mid-reply: the half reply is not sent; the whole one is.
    st.text(B, "CRASHONCE now").await;
    let r = nth_sms(&st.twilio, B, 1, Duration::from_secs(30));
    assert_eq!(r, "[1] heard: CRASHONCE now | earlier: nothing");

    // Never answers: cancelled after --timeout; with no text that is no answer, so the
    // text gets `fail` (asked again later), not an ack.
    st.text(C, "HANG forever").await;
    let cancel = st.events().wait("cancel", 1, Duration::from_secs(20));
    assert!(cancel["sessionId"].as_str().unwrap().starts_with("sess-"));
    let failed = failed_turn(&bridge, C, Duration::from_secs(20));
    assert!(
        failed.contains("cancelled after --timeout with no text"),
        "{failed}"
    );
    assert!(bridge.log().contains("did not finish within --timeout 2 s"));

    // Garbage on stdout: logged, ignored, the turn still answered.
    st.text(D, "GARBAGE first").await;
    assert_eq!(st.sms(D, 1), "[1] heard: GARBAGE first | earlier: nothing");
    assert!(bridge.log().contains("not JSON-RPC"));

    // A flood of 500,000 characters: one SMS of at most 300 characters ending in "…".
    st.text(E, "FLOOD me").await;
    let r = nth_sms(&st.twilio, E, 1, Duration::from_secs(60));
    assert!(r.chars().count() <= 300 && r.ends_with('…'), "{r}");
    assert!(bridge.wait_log("cut to --max-chars 300", Duration::from_secs(5)));
    let rss = rss_kib(bridge.child.id());
    eprintln!("bridge RSS after a 500,000-character flood: {rss} KiB");
    assert!(rss < 200 * 1024, "bridge RSS {rss} KiB after the flood");

    // A turn with no text: `fail`, nothing sent. Then a normal one to G.
    st.text(F, "SILENT please").await;
    failed_turn(&bridge, F, Duration::from_secs(20));
    st.text(G, "last").await;
    st.sms(G, 1);
    assert!(st.twilio.sends_to(F).is_empty());
    assert!(st.twilio.sends_to(C).is_empty());

    // Everything answered was acknowledged; what was not (C's, F's) still waits.
    assert_eq!(bridge.stop().code(), Some(0));
    assert_eq!(st.gw.stop().code(), Some(0));
    assert_eq!(waiting_from(&st.t), [C, F]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_becomes_one_prompt_and_a_later_text_its_own_turn() {
    let st = setup();
    let bridge = st.acp(&["--coalesce", "1500"], &[]);
    for body in ["hey", "can you", "check my 3pm"] {
        st.text(A, body).await;
    }
    let last_text = std::time::Instant::now();
    let r = st.sms(A, 1);
    eprintln!(
        "the burst's reply reached Twilio {} ms after the last text (window 1500 ms)",
        (st.twilio.sends_to(A)[0].at - last_text).as_millis()
    );
    assert_eq!(
        r,
        "[1] heard: hey\ncan you\ncheck my 3pm | earlier: nothing"
    );
    assert_eq!(st.events().of("prompt").len(), 1);
    assert!(bridge.log().contains("texts=3"));
    // The reply came after the window closed, so this one is a turn of its own.
    st.text(A, "and 4pm?").await;
    let r = st.sms(A, 2);
    assert_eq!(
        r,
        "[2] heard: and 4pm? | earlier: hey\ncan you\ncheck my 3pm"
    );
    assert_eq!(st.twilio.sends_to(A).len(), 2);
    assert_eq!(bridge.stop().code(), Some(0));
    assert_eq!(st.gw.stop().code(), Some(0));
    assert!(st.t.store().inbox().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn slash_new_starts_a_new_session() {
    let st = setup();
    let _bridge = st.acp(&["--coalesce", "0"], &[]);
    st.text(A, "hello").await;
    st.sms(A, 1);
    st.text(A, "/new").await;
    // The daemon's confirmation.
    st.sms(A, 2);
    st.text(A, "who am I?").await;
    assert_eq!(st.sms(A, 3), "[1] heard: who am I? | earlier: nothing");
    assert_eq!(st.events().of("new").len(), 2);
}

#[test]
fn an_agent_that_cannot_start_is_retried_with_a_clear_log_line() {
    let t = TestDir::new();
    let b = Bridge::start(
        &[
            "acp".into(),
            "--socket".into(),
            s(&t.path().join("agent.sock")),
            "--state-dir".into(),
            s(&t.path().join("state")),
            "--".into(),
            "/nonexistent/acp-agent".into(),
            "--acp".into(),
        ],
        &[],
    );
    b.assert_log_soon(
        "cannot start the ACP agent /nonexistent/acp-agent: cannot run",
        Duration::from_secs(10),
    );
    assert!(b.wait_log("restarting the ACP agent", Duration::from_secs(5)));
    assert_eq!(b.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mms_picture_becomes_an_image_block() {
    let st = setup();
    let _bridge = st.acp(&["--coalesce", "0"], &[]);
    let sid = "MMf0000000000000000000000000000001";
    let media_url = format!(
        "{}/2010-04-01/Accounts/{SID}/Messages/{sid}/Media/ME0000000000000000000000000000001",
        st.twilio.base_url()
    );
    let mut p = inbound(sid, A, "PICTURE of my cat");
    p[6] = ("NumMedia", "1");
    p.extend([
        ("MediaUrl0", media_url.as_str()),
        ("MediaContentType0", "image/jpeg"),
    ]);
    assert_eq!(post_signed(&st.gw, "/webhooks/sms", &p).await.0, 200);
    // The fake Twilio serves 17 bytes of "JPEG".
    assert_eq!(st.sms(A, 1), "pictures: image/jpeg 17 bytes");
    let prompt = st.events().wait("prompt", 1, Duration::from_secs(5));
    assert_eq!(prompt["images"], 1);
    assert_eq!(prompt["text"], "PICTURE of my cat");
}

/// CONTRACT §10: the agent's `image` and `resource` (inline blob) blocks in its message
/// chunks arrive as one MMS with the turn's text; the bytes Twilio fetches are the
/// agent's.
#[tokio::test(flavor = "multi_thread")]
async fn the_agents_image_and_resource_blocks_arrive_as_mms() {
    use base64::Engine as _;
    let st = setup();
    st.twilio.fetch_media_via(&format!("http://{}", st.gw.addr));
    let _bridge = st.acp(&["--coalesce", "0"], &[]);
    st.text(A, "DRAW me a chart").await;
    assert_eq!(st.sms(A, 1), "here is your chart");
    let send = &st.twilio.sends_to(A)[0];
    let urls = send.fields("MediaUrl");
    assert_eq!(urls.len(), 2, "{urls:?}");
    assert!(urls[1].ends_with("/report.pdf"), "{urls:?}");
    let drew = st.events().wait("drew", 1, Duration::from_secs(5));
    let b64 = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(drew[k].as_str().unwrap())
            .unwrap()
    };
    let fetched = st.twilio.wait_fetched(2, Duration::from_secs(20));
    assert_eq!(fetched.len(), 2);
    assert_eq!(fetched[0].content_type.as_deref(), Some("image/png"));
    assert!(fetched[0].bytes == b64("png"));
    assert_eq!(fetched[1].content_type.as_deref(), Some("application/pdf"));
    assert!(fetched[1].bytes == b64("pdf"));
}

#[tokio::test(flavor = "multi_thread")]
async fn conversations_run_side_by_side_and_sigterm_mid_turn_exits_0() {
    let st = setup();
    let bridge = st.acp(&["--coalesce", "0", "--timeout", "300"], &[]);
    st.text(A, "HANG until stopped").await;
    st.events().wait("prompt", 1, Duration::from_secs(20));
    // A's turn is still running; B is answered meanwhile.
    st.text(B, "hi").await;
    assert_eq!(st.sms(B, 1), "[1] heard: hi | earlier: nothing");
    assert!(st.events().of("cancel").is_empty());
    // SIGTERM with a turn in flight: exit 0, and A's text stays with the gateway.
    assert_eq!(bridge.stop().code(), Some(0));
    assert!(st.twilio.sends_to(A).is_empty());
    assert_eq!(st.gw.stop().code(), Some(0));
    let inbox = st.t.store().inbox().unwrap();
    assert_eq!(inbox.len(), 1, "A's text waits for the next agent");
}

#[tokio::test(flavor = "multi_thread")]
async fn turns_that_are_no_answer_get_fail_never_an_ack() {
    let st = setup();
    let bridge = st.acp(&["--coalesce", "0", "--timeout", "2"], &[]);
    // (sender, text, what the failed turn's line says)
    let cases = [
        // OpenClaw when its model fails for good: end_turn and no chunk.
        (A, "SILENT please", "ended its turn (end_turn) with no text"),
        // OpenClaw after its gateway restarted mid-run: a cancel nobody asked for,
        // with its interruption notice as the only text.
        (B, "INTERRUPTED run", "not asked for by smsgate"),
        (C, "REFUSE this", "stopReason refusal"),
        (D, "MAXTOKENS go", "stopReason max_tokens"),
        // Our own --timeout, and nothing written by then.
        (E, "HANG forever", "cancelled after --timeout with no text"),
    ];
    for (from, body, _) in cases {
        st.text(from, body).await;
    }
    for (from, _, why) in cases {
        let line = failed_turn(&bridge, from, Duration::from_secs(30));
        assert!(line.contains(why), "{why:?} not in {line}");
        assert!(
            !line.contains("OpenClaw interruption"),
            "the text is not logged: {line}"
        );
    }
    // The bridge still answers.
    st.text(F, "hello").await;
    st.sms(F, 1);
    for (from, _, _) in cases {
        assert!(st.twilio.sends_to(from).is_empty(), "{from} was texted");
    }
    // None of them was acknowledged: all five still wait in the daemon.
    assert_eq!(bridge.stop().code(), Some(0));
    assert_eq!(st.gw.stop().code(), Some(0));
    assert_eq!(waiting_from(&st.t), [A, B, C, D, E]);
}

/// A message chunk that does not follow ACP v1 (here a content type that does not
/// exist) carries text the bridge cannot read: sending the rest as the reply would
/// drop part of the answer without a word. The turn fails (a WARN naming the chunk),
/// nothing is texted, and the text waits in the daemon; an update of a kind the
/// schema does not know is still skipped quietly (no reply text in it).
#[tokio::test(flavor = "multi_thread")]
async fn a_message_chunk_the_schema_cannot_read_fails_the_turn_never_a_partial_reply() {
    let st = setup();
    let bridge = st.acp(&["--coalesce", "0"], &[]);
    st.text(A, "BADCHUNK please").await;
    let line = failed_turn(&bridge, A, Duration::from_secs(30));
    assert!(line.contains("message chunk"), "{line}");
    assert!(
        bridge
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("agent_message_chunk")),
        "no WARN names the unreadable chunk:\n{}",
        bridge.log()
    );
    // The bridge still answers the next text.
    st.text(B, "hello").await;
    st.sms(B, 1);
    assert!(
        st.twilio.sends_to(A).is_empty(),
        "a partial reply was texted: {:?}",
        st.twilio.sends_to(A)[0].field("Body")
    );
    assert!(
        !bridge.log().contains("the middle"),
        "the text is not logged"
    );
    assert_eq!(bridge.stop().code(), Some(0));
    assert_eq!(st.gw.stop().code(), Some(0));
    assert_eq!(waiting_from(&st.t), [A]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_hands_out_one_session_twice_never_texts_bob_alices_reply() {
    let st = setup();
    let bridge = st.acp(
        &["--coalesce", "0"],
        &[("ACP_FIXED_SESSION", "sess-shared")],
    );
    st.text(A, "secret from alice").await;
    assert_eq!(
        st.sms(A, 1),
        "[1] heard: secret from alice | earlier: nothing"
    );
    // Bob's session/new returns Alice's session: refused, and Bob's text gets `fail`.
    st.text(B, "hi from bob").await;
    let line = failed_turn(&bridge, B, Duration::from_secs(20));
    assert!(line.contains("belongs to another"), "{line}");
    let log = bridge.log();
    let refusal = log
        .lines()
        .find(|l| l.contains("which belongs to conversation"))
        .unwrap_or_else(|| panic!("no refusal line in:\n{log}"));
    assert!(refusal.contains("ERROR"), "{refusal}");
    assert!(!log.contains(B) && !log.contains("secret"), "{log}");
    // Alice carries on in her session; Bob is refused again, never prompted.
    st.text(A, "again").await;
    assert_eq!(
        st.sms(A, 2),
        "[2] heard: again | earlier: secret from alice"
    );
    let prompts: Vec<String> = st
        .events()
        .of("prompt")
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(prompts, ["secret from alice", "again"]);
    assert!(
        st.twilio.sends_to(B).is_empty(),
        "Bob got {:?}",
        st.twilio.sends_to(B)
    );
    assert_eq!(bridge.stop().code(), Some(0));
    assert_eq!(st.gw.stop().code(), Some(0));
    assert_eq!(waiting_from(&st.t), [B]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_stops_reading_its_stdin_costs_bounded_memory_and_its_turns_fail() {
    let st = setup();
    // A --timeout well past the stdin stall (min(30 s, --timeout)): the agent is then
    // judged by its stdin filling, never by a prompt timing out first. (With both at
    // 3 s, which came first depended on how fast the flood filled 8 MiB: on a loaded
    // machine the prompt timed out, the agent was restarted and the turns asked again.)
    let bridge = st.acp(&["--coalesce", "0", "--timeout", "60"], &[]);
    // A normal turn logs one INFO line (and the first of a conversation no more than
    // two).
    st.text(A, "hello").await;
    st.sms(A, 1);
    let before = info_lines(&bridge.log());
    st.text(A, "again").await;
    st.sms(A, 2);
    assert!(bridge.wait_log("turn done", Duration::from_secs(5)));
    let log = bridge.log();
    assert_eq!(info_lines(&log) - before, 1, "{log}");

    // The agent stops reading its stdin and floods the bridge with requests, each of
    // which wants an answer written to that stdin; meanwhile large texts arrive.
    st.text(A, "NOREADONCE now").await;
    st.events().wait("deaf", 1, Duration::from_secs(20));
    let big = "big ".repeat(5000);
    for from in [B, C, D] {
        st.text(from, &big).await;
    }
    let pid = bridge.child.id();
    let mut peak = 0;
    let all_failed = wait_until(Duration::from_secs(150), || {
        peak = peak.max(rss_kib(pid));
        let log = bridge.log();
        [A, B, C, D].iter().all(|f| {
            let tag = format!("from=***{}", &f[f.len() - 4..]);
            log.lines()
                .any(|l| l.contains("turn failed") && l.contains(&tag))
        })
    });
    let log = bridge.log();
    eprintln!("bridge RSS peak while the agent did not read: {peak} KiB");
    eprintln!(
        "agent flood progress: {:?}",
        st.events().of("flooded").last()
    );
    assert!(all_failed, "not every turn failed:\n{log}");
    assert!(peak < 64 * 1024, "bridge RSS {peak} KiB");
    for from in [A, B, C, D] {
        let line = failed_turn(&bridge, from, Duration::from_secs(1));
        assert!(line.contains("did not read its stdin"), "{line}");
    }
    assert!(log.contains("has not read its stdin"), "{log}");
    // A request flood is not a log flood (the agent's own stderr aside).
    let ours = log
        .lines()
        .filter(|l| {
            [" DEBUG ", " INFO ", " WARN ", " ERROR "]
                .iter()
                .any(|k| l.contains(k))
        })
        .count();
    assert!(ours < 100, "{ours} log lines:\n{log}");
    // The agent was restarted and answers again.
    st.text(E, "after the flood").await;
    assert_eq!(
        nth_sms(&st.twilio, E, 1, Duration::from_secs(30)),
        "[1] heard: after the flood | earlier: nothing"
    );
    assert!(st.events().of("start").len() >= 2);
    for from in [B, C, D] {
        assert!(st.twilio.sends_to(from).is_empty());
    }
    assert_eq!(st.twilio.sends_to(A).len(), 2);
    assert_eq!(bridge.stop().code(), Some(0));
    assert_eq!(st.gw.stop().code(), Some(0));
    assert_eq!(waiting_from(&st.t), [A, B, C, D]);
}

#[tokio::test(flavor = "multi_thread")]
async fn conversations_idle_for_30_days_are_forgotten() {
    let st = setup();
    // A map as an earlier bridge left it: one conversation used 40 days ago, one
    // yesterday, one in the old form (a bare session id).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let dir = st.t.path().join("bridge-state");
    std::fs::create_dir_all(&dir).unwrap();
    let map = serde_json::json!({
        "c-idle": {"sessionId": "sess-idle", "lastUsed": now - 40 * 86400},
        "c-recent": {"sessionId": "sess-recent", "lastUsed": now - 86400},
        "c-bare": "sess-bare",
    });
    std::fs::write(dir.join("sessions.json"), map.to_string()).unwrap();
    let bridge = st.acp(&["--coalesce", "0"], &[]);
    assert!(bridge.wait_log(
        "forgot 1 conversation(s) idle for over 30 days",
        Duration::from_secs(10)
    ));
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("sessions.json")).unwrap()).unwrap()
    };
    let m = read();
    assert!(m.get("c-idle").is_none(), "{m}");
    assert_eq!(m["c-recent"]["sessionId"], "sess-recent");
    assert_eq!(m["c-bare"]["sessionId"], "sess-bare");
    assert!(m["c-bare"]["lastUsed"].as_u64().unwrap() >= now);
    // A new conversation is written with its time of use.
    st.text(A, "hello").await;
    st.sms(A, 1);
    let m = read();
    let conv = m
        .as_object()
        .unwrap()
        .keys()
        .find(|k| {
            !k.starts_with("c-idle") && !k.starts_with("c-recent") && !k.starts_with("c-bare")
        })
        .cloned()
        .unwrap();
    assert!(m[&conv]["lastUsed"].as_u64().unwrap() >= now);
    assert_eq!(bridge.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_with_no_text_is_asked_again_with_backoff_then_lands_in_the_dead_letters() {
    let st = setup_with(&[("SMSGATE_AGENT_RETRY_MS", "100")]);
    let bridge = st.acp(&["--coalesce", "0"], &[]);
    st.text(A, "SILENT please").await;
    let list = st.wait_dead_letter(&bridge);
    assert_eq!(list.len(), 1, "{list:?}");
    let e = &list[0];
    assert_eq!(e["attempts"], 5, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("ended its turn (end_turn) with no text"),
        "{e}"
    );
    // Asked five times (the daemon's redeliveries), never texted, never acked.
    let prompts = st.events().of("prompt");
    assert_eq!(prompts.len(), 5, "{prompts:?}");
    assert!(prompts.iter().all(|p| p["text"] == "SILENT please"));
    assert!(st.twilio.sends_to(A).is_empty());
    // The bridge carries on for the sender: the conversation is not blocked.
    st.text(A, "hello").await;
    assert_eq!(st.sms(A, 1), "[1] heard: hello | earlier: nothing");
    assert_eq!(bridge.stop().code(), Some(0));
}

/// Issue 22 item 3, CONTRACT §9: `--permissions ask` turns the official SDK agent's
/// `session/request_permission` into an approval SMS (the tool call's title and kind,
/// its command) and the approver's answer picks the agent's own option: ALWAYS →
/// allow_always, NO → reject, no answer in time → reject.
#[tokio::test(flavor = "multi_thread")]
async fn permissions_ask_texts_the_approver_and_follows_the_answer() {
    const APPROVER: &str = "+15557659990";
    let st = Setup::new(
        &format!(
            r#"dmPolicy: "allowlist", allowFrom: ["{A}"], execApprovals: {{ approvers: ["{APPROVER}"], timeoutSecs: 3 }}"#
        ),
        &[],
    );
    let bridge = st.acp(&["--coalesce", "0", "--permissions", "ask"], &[]);
    let code_of = |body: &str| -> String {
        body.rsplit("YES ")
            .next()
            .unwrap()
            .chars()
            .take(6)
            .collect()
    };

    st.text(A, "PERMISSION RUNCMD one").await;
    let ask = st.sms(APPROVER, 1);
    assert!(ask.contains("\"Run a shell command (execute)\""), "{ask}");
    assert!(ask.contains("\"rm -rf build/\""), "{ask}");
    assert!(ask.contains("***0001"), "the chat, redacted: {ask}");
    st.text(APPROVER, &format!("ALWAYS {}", code_of(&ask)))
        .await;
    assert_eq!(st.sms(A, 1), "permission: yes-always");
    assert!(st.sms(APPROVER, 2).contains("allowed always"));

    st.text(A, "PERMISSION two").await;
    let ask = st.sms(APPROVER, 3);
    assert!(ask.contains("\"Write notes.txt (edit)\""), "{ask}");
    st.text(APPROVER, &format!("NO {}", code_of(&ask))).await;
    assert_eq!(st.sms(A, 2), "permission: no");

    // Nobody answers within timeoutSecs: rejected.
    st.text(A, "PERMISSION three").await;
    st.sms(APPROVER, 5);
    assert_eq!(st.sms(A, 3), "permission: no");
    let outcomes: Vec<String> = st
        .events()
        .of("permission")
        .iter()
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes, ["yes-always", "no", "no"]);
    let log = bridge.log();
    assert!(log.contains("the approvers answered allow_always"), "{log}");
    assert!(log.contains("the approvers answered timeout"), "{log}");
    assert_eq!(bridge.stop().code(), Some(0));
}

/// A prompt cancelled by `--timeout` withdraws its asks: the bridge sends `cancel`, the
/// daemon records `cancelled` and tells the approver.
#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_timeout_withdraws_its_ask() {
    const APPROVER: &str = "+15557659990";
    let st = Setup::new(
        &format!(
            r#"dmPolicy: "allowlist", allowFrom: ["{A}"], execApprovals: {{ approvers: ["{APPROVER}"] }}"#
        ),
        &[],
    );
    let bridge = st.acp(
        &["--coalesce", "0", "--permissions", "ask", "--timeout", "2"],
        &[],
    );
    st.text(A, "PERMISSION slow").await;
    let ask = st.sms(APPROVER, 1);
    let code: String = ask.rsplit("YES ").next().unwrap().chars().take(6).collect();
    let withdrawn = st.sms(APPROVER, 2);
    assert_eq!(
        withdrawn,
        format!("{code}: the agent withdrew its ask; nothing to answer.")
    );
    let out = cli(&st.config, &["approvals", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decided"][0]["decision"], "cancelled", "{v}");
    assert_eq!(v["decided"][0]["title"], "Write notes.txt (edit)", "{v}");
    bridge.assert_log_has("did not finish within --timeout");
    drop(bridge);
}
