//! Sends whose outcome is unknown (the request went out, no answer came back) are
//! resolved by asking Twilio, never by sending blind: found → recorded as sent (no
//! second text); not found at two lookups → sent once. Across `kill -9` too. The fake
//! Twilio lists exactly the messages it created, like Twilio does.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// The first lookup this long after the attempt (the second at five times it).
const SETTLE_MS: &str = "300";

fn gateway(config: &std::path::Path) -> Gateway {
    Gateway::start_with(
        config,
        &[
            ("SMSGATE_UNKNOWN_SETTLE_MS", SETTLE_MS),
            ("SMSGATE_TWILIO_TIMEOUT_MS", "1000"),
        ],
    )
}

/// The recipient every test texts (the account's `defaultTo`).
const TO: &str = "+15557650000";

struct Setup {
    t: TestDir,
    twilio: FakeTwilio,
    config: std::path::PathBuf,
    gw: Gateway,
    agent: TestAgent,
}

fn setup() -> Setup {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    // allowTo: some tests text fresh recipients of their own (CONTRACT §9).
    let config = t.config(
        &twilio,
        &format!(r#"defaultTo: "{TO}", allowTo: ["{TO}", "+1555768*"]"#),
    );
    let gw = gateway(&config);
    let agent = TestAgent::connect(&t.agent_sock());
    Setup {
        t,
        twilio,
        config,
        gw,
        agent,
    }
}

fn creates(twilio: &FakeTwilio, to: &str) -> usize {
    twilio.sends_to(to).len()
}

fn lookups(twilio: &FakeTwilio) -> Vec<String> {
    twilio
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/Messages.json"))
        .filter_map(|r| r.query)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_found_by_the_lookup_is_recorded_as_sent_not_sent_again() {
    let Setup {
        t: _t,
        twilio,
        config,
        gw,
        mut agent,
    } = setup();
    // Twilio creates the message but its answer never arrives.
    twilio.push(Canned::Hang);
    agent.send(json!({"type": "send", "text": "did it go?", "ref": "u1"}));
    let sent = agent.next_of("sent");
    assert_eq!(sent["ref"], "u1");
    let created = twilio.sends_to(TO)[0].clone();
    assert_eq!(sent["sids"].as_array().unwrap().len(), 1, "{sent}");
    gw.assert_log_soon("found at Twilio", Duration::from_secs(10));
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert_eq!(creates(&twilio, TO), 1, "never sent twice");
    assert_eq!(created.field("Body"), Some("did it go?"));
    // The lookup asked for our number to theirs since the attempt's day.
    let q = lookups(&twilio);
    assert!(
        q.iter().any(|q| q.contains("To=%2B15557650000")
            && q.contains("From=%2B15550001111")
            && q.contains("DateSent%3E=")),
        "{q:?}"
    );
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_twilio_never_created_is_sent_exactly_once_after_two_lookups() {
    let Setup {
        t: _t,
        twilio,
        config,
        gw,
        mut agent,
    } = setup();
    twilio.push(Canned::Lost);
    agent.send(json!({"type": "send", "text": "lost in transit", "ref": "u2"}));
    let sent = agent.next_of("sent");
    assert_eq!(sent["ref"], "u2");
    gw.assert_log_has("asking once more");
    gw.assert_log_has("sending it (once)");
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert_eq!(creates(&twilio, TO), 2, "the lost attempt and one resend");
    assert!(lookups(&twilio).len() >= 2, "two lookups before the resend");
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_unreachable_for_the_lookup_never_sends_blind_and_queue_list_shows_it() {
    let Setup {
        t: _t,
        twilio,
        config,
        gw,
        mut agent,
    } = setup();
    twilio.route(
        "GET",
        &format!("/2010-04-01/Accounts/{SID}/Messages.json"),
        500,
        json!({"code": 20500, "message": "Internal Server Error", "status": 500}),
    );
    twilio.push(Canned::Lost);
    agent.send(json!({"type": "send", "text": "wait for it", "ref": "u3"}));
    gw.assert_log_soon(
        "cannot ask Twilio about a send of unknown outcome",
        Duration::from_secs(10),
    );
    let list: serde_json::Value =
        serde_json::from_slice(&cli(&config, &["queue", "list", "--json"]).stdout).unwrap();
    assert_eq!(list[0]["state"], "unknown", "{list}");
    assert!(list[0]["nextCheck"].as_str().is_some(), "{list}");
    let text = stdout(&cli(&config, &["queue", "list"]));
    assert!(text.contains("next check with Twilio"), "{text}");
    // However long Twilio stays away, nothing is sent blind: the lookup is retried.
    let before = lookups(&twilio).len();
    assert!(wait_until(Duration::from_secs(60), || lookups(&twilio)
        .len()
        > before));
    assert_eq!(creates(&twilio, TO), 1);
    assert_eq!(agent.next_within(Duration::from_millis(1)), None);
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn across_kill_9_between_the_attempt_and_the_lookup() {
    for created in [true, false] {
        let Setup {
            t: _t,
            twilio,
            config,
            gw,
            mut agent,
        } = setup();
        let to = TO;
        twilio.push(if created { Canned::Hang } else { Canned::Lost });
        agent.send(json!({"type": "send", "text": "mid-crash", "ref": "k"}));
        assert!(wait_until(Duration::from_secs(10), || creates(&twilio, to) == 1));
        gw.kill9();
        drop(agent);
        let gw = gateway(&config);
        let want = if created {
            "found at Twilio"
        } else {
            "sending it (once)"
        };
        gw.assert_log_soon(want, Duration::from_secs(20));
        assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
        let list: serde_json::Value =
            serde_json::from_slice(&cli(&config, &["queue", "list", "--json"]).stdout).unwrap();
        assert_eq!(list, json!([]), "resolved, nothing left for the operator");
        assert_eq!(
            creates(&twilio, to),
            if created { 1 } else { 2 },
            "created={created}: exactly one text reaches the person"
        );
        assert_eq!(gw.stop().code(), Some(0));
    }
}

/// A stranger texts, the gateway dies right after the 200: whatever point the pairing
/// code's send had reached, the stranger gets exactly one code.
#[tokio::test(flavor = "multi_thread")]
async fn the_pairing_code_after_kill_9_right_after_the_200_is_texted_exactly_once() {
    let (_t, twilio, config) = configured("");
    for round in 0..20u32 {
        let stranger = format!("+1555766{round:04}");
        let gw = gateway(&config);
        let sid = format!("SMa{round:031}");
        assert_eq!(gw.admit(&sid, &stranger, "hello?").await, 200);
        gw.kill9();
        let gw = gateway(&config);
        assert!(
            wait_until(Duration::from_secs(20), || creates(&twilio, &stranger) >= 1
                && gw.status(&config)["quiet"] == true
                && serde_json::from_slice::<serde_json::Value>(
                    &cli(&config, &["queue", "list", "--json"]).stdout
                )
                .is_ok_and(|l| l == json!([]))),
            "round {round}: {}",
            gw.log()
        );
        let codes = twilio.sends_to(&stranger);
        assert_eq!(codes.len(), 1, "round {round}: {} codes", codes.len());
        let list: serde_json::Value =
            serde_json::from_slice(&cli(&config, &["pairing", "list", "--json"]).stdout).unwrap();
        let code = list[0]["code"].as_str().unwrap();
        assert!(codes[0].field("Body").unwrap().contains(code));
        assert!(cli(&config, &["pairing", "reject", code]).status.success());
        assert_eq!(gw.stop().code(), Some(0));
    }
}

/// Every code in the hint table, refused by Twilio at send time: its hint is in the
/// agent's `error` line and in the log line; and as delivery failures of our own sends
/// it is counted, with its hint, by `channels status --probe`.
#[tokio::test(flavor = "multi_thread")]
async fn each_listed_error_code_comes_with_its_hint_in_log_agent_line_and_probe() {
    const CODES: [u32; 17] = [
        20003, 21211, 21408, 21608, 21610, 21612, 21614, 21617, 30003, 30004, 30005, 30006, 30007,
        30008, 30034, 30035, 11200,
    ];
    let Setup {
        t: _t,
        twilio,
        config,
        gw,
        mut agent,
    } = setup();
    for (i, code) in CODES.iter().enumerate() {
        twilio.push(twilio_error(*code, 400));
        // A fresh recipient each time: 21610 marks the one it hits as opted out.
        let to = format!("+1555768{i:04}");
        agent.send(json!({"type": "send", "to": to, "text": "x", "ref": format!("e{code}")}));
        let e = agent.next_of("error");
        assert_eq!(e["code"], *code, "{e}");
        let hint = e["hint"]
            .as_str()
            .unwrap_or_else(|| panic!("no hint for {code}: {e}"));
        assert!(!hint.is_empty());
        gw.assert_log_soon(&format!("with error {code}"), Duration::from_secs(5));
        let line = gw
            .log()
            .lines()
            .find(|l| l.contains(&format!("with error {code}")))
            .unwrap()
            .to_string();
        assert!(line.contains(&format!("Hint: {hint}")), "{code}: {line}");
    }
    assert_eq!(gw.stop().code(), Some(0));
    // The probe: our own recent sends that failed, counted by code, each with its hint.
    twilio.route(
        "GET",
        &format!("/2010-04-01/Accounts/{SID}.json"),
        200,
        json!({"sid": SID, "friendly_name": "Test", "status": "active"}),
    );
    twilio.route("GET", &format!("/2010-04-01/Accounts/{SID}/IncomingPhoneNumbers.json"), 200, json!({
        "incoming_phone_numbers": [{"sid": "PN0123456789abcdef0123456789abcdef", "phone_number": FROM, "sms_url": PUBLIC, "sms_method": "POST"}]
    }));
    let failed: Vec<serde_json::Value> = CODES
        .iter()
        .filter(|c| **c != 11200)
        .map(|c| json!({"sid": "SMx", "status": "failed", "error_code": c, "direction": "outbound-api"}))
        .collect();
    twilio.route(
        "GET",
        &format!("/2010-04-01/Accounts/{SID}/Messages.json"),
        200,
        json!({ "messages": failed }),
    );
    let out = cli(&config, &["channels", "status", "--probe", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hints = v["accounts"][0]["hints"].to_string();
    for code in CODES.iter().filter(|c| **c != 11200) {
        assert!(
            hints.contains(&format!("Error {code}: ")),
            "{code}: {hints}"
        );
    }
}

/// The fake's created message for `to` (its SID), the one whose answer never came.
fn created_sid(twilio: &FakeTwilio, to: &str) -> String {
    twilio.sends_to(to)[0]
        .created
        .clone()
        .expect("the fake created it")
}

fn queue_list(config: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&cli(config, &["queue", "list", "--json"]).stdout).unwrap()
}

/// A lookup reads past the first page: the send's match sits on page 2, behind newer
/// texts to the same person, and is found there (no second send).
#[tokio::test(flavor = "multi_thread")]
async fn a_match_on_the_second_page_is_found_not_sent_again() {
    let Setup {
        t: _t,
        twilio,
        config,
        gw,
        mut agent,
    } = setup();
    twilio.paginate(2);
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap();
    for i in 0..3 {
        twilio.list_also(json!({
            "sid": format!("SMother{i:026}"), "to": TO, "from": FROM,
            "body": format!("a newer text {i}"), "direction": "outbound-api",
            "status": "sent", "date_created": now, "date_sent": now,
        }));
    }
    twilio.push(Canned::Hang);
    agent.send(json!({"type": "send", "text": "on page two", "ref": "p2"}));
    let sent = agent.next_of("sent");
    assert_eq!(sent["ref"], "p2");
    assert_eq!(sent["sids"], json!([created_sid(&twilio, TO)]), "{sent}");
    assert!(gw.wait_log("found at Twilio", Duration::from_secs(10)));
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert_eq!(creates(&twilio, TO), 1, "never sent twice");
    let q = lookups(&twilio);
    assert!(q.iter().any(|q| q.contains("Page=1")), "read page 2: {q:?}");
    assert_eq!(queue_list(&config), json!([]));
    assert_eq!(gw.stop().code(), Some(0));
}

/// A list longer than the lookup reads (5 pages), all of it newer than the attempt,
/// proves nothing: the match may be further on. Asked again, never sent blind; once the
/// list fits, found.
#[tokio::test(flavor = "multi_thread")]
async fn a_list_cut_short_before_the_attempt_is_not_taken_for_not_found() {
    let Setup {
        t: _t,
        twilio,
        config,
        gw,
        mut agent,
    } = setup();
    twilio.paginate(1);
    let later = (time::OffsetDateTime::now_utc() + time::Duration::minutes(1))
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap();
    for i in 0..6 {
        twilio.list_also(json!({
            "sid": format!("SMnewer{i:026}"), "to": TO, "from": FROM,
            "body": format!("a newer text {i}"), "direction": "outbound-api",
            "status": "sent", "date_created": later, "date_sent": later,
        }));
    }
    twilio.push(Canned::Hang);
    agent.send(json!({"type": "send", "text": "deep in the list", "ref": "d"}));
    gw.assert_log_soon("the match may be further on", Duration::from_secs(10));
    let before = lookups(&twilio).len();
    assert!(wait_until(Duration::from_secs(10), || lookups(&twilio)
        .len()
        >= before + 10));
    assert_eq!(creates(&twilio, TO), 1, "nothing sent blind");
    let list = queue_list(&config);
    assert!(
        list[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("further on")),
        "{list}"
    );
    assert_eq!(agent.next_within(Duration::from_millis(1)), None);
    twilio.paginate(50);
    let sent = agent.next_of("sent");
    assert_eq!(sent["sids"], json!([created_sid(&twilio, TO)]), "{sent}");
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert_eq!(creates(&twilio, TO), 1);
    assert_eq!(gw.stop().code(), Some(0));
}

/// Twilio's clock and ours disagree (or ours was stepped): a message Twilio created must
/// not look older than the attempt, nor fall outside the `DateSent>=` day, or it would
/// be sent a second time. Twilio's clock (the fake's) is 20 minutes behind ours, a day
/// and two hours behind (another day), and 20 minutes ahead; and 20 minutes behind with
/// a `kill -9` between the attempt and the lookup (the monotonic clock is lost then).
#[tokio::test(flavor = "multi_thread")]
async fn a_clock_jump_does_not_hide_a_created_message() {
    const MIN: i64 = 60_000;
    for (skew, crash) in [
        (-20 * MIN, false),
        (-26 * 60 * MIN, false),
        (20 * MIN, false),
        (-20 * MIN, true),
    ] {
        let case = format!("skew {skew} ms, kill -9 {crash}");
        let Setup {
            t: _t,
            twilio,
            config,
            mut gw,
            mut agent,
        } = setup();
        twilio.set_clock_skew(skew);
        twilio.push(Canned::Hang);
        agent.send(json!({"type": "send", "text": "what time is it?", "ref": "c"}));
        if crash {
            assert!(wait_until(Duration::from_secs(10), || creates(&twilio, TO) == 1));
            gw.kill9();
            gw = gateway(&config);
        } else {
            let sent = agent.next_of("sent");
            assert_eq!(
                sent["sids"],
                json!([created_sid(&twilio, TO)]),
                "{case}: {sent}"
            );
        }
        assert!(
            gw.wait_log("found at Twilio", Duration::from_secs(10)),
            "{case}: {}",
            gw.log()
        );
        gw.assert_log_has("Twilio's clock and ours differ");
        assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
        assert_eq!(creates(&twilio, TO), 1, "{case}: never sent twice");
        assert_eq!(queue_list(&config), json!([]));
        assert_eq!(gw.stop().code(), Some(0));
    }
}

/// The lookup answered 401 (credentials), 404 (no such account), or 401 from something
/// that is not Twilio (no code): asked again with backoff, never sent blind; `queue list`
/// and the log say what is wrong and what to do; once Twilio answers properly the send
/// resolves, exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_lookup_answered_401_or_404_never_sends_blind_and_says_why() {
    let cases: [(u16, Option<u32>, &str); 3] = [
        (401, Some(20003), "authToken"),
        (404, Some(20404), "accountSid"),
        (401, None, "authToken"),
    ];
    for (status, code, fix) in cases {
        let Setup {
            t: _t,
            twilio,
            config,
            gw,
            mut agent,
        } = setup();
        let path = FakeTwilio::messages_path();
        match code {
            Some(code) => twilio.route(
                "GET",
                &path,
                status,
                json!({"code": code, "message": "nope", "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status}),
            ),
            None => twilio.route_raw("GET", &path, status, "<html>401 Authorization Required</html>"),
        }
        twilio.push(Canned::Hang);
        agent.send(json!({"type": "send", "text": "knock knock", "ref": "a"}));
        let case = format!("{status} {code:?}");
        assert!(
            gw.wait_log(
                "cannot ask Twilio about a send of unknown outcome",
                Duration::from_secs(10)
            ),
            "{case}: {}",
            gw.log()
        );
        let line = gw
            .log()
            .lines()
            .find(|l| l.contains("cannot ask Twilio"))
            .unwrap()
            .to_string();
        assert!(
            line.contains(&format!("Twilio answered {status}")) && line.contains(fix),
            "{case}: {line}"
        );
        assert!(!line.contains(TOKEN), "no secret in the log: {line}");
        // Asked again and again, with backoff; nothing sent blind meanwhile.
        assert!(
            wait_until(Duration::from_secs(10), || lookups(&twilio).len() >= 3),
            "{case}"
        );
        let list = queue_list(&config);
        assert_eq!(list[0]["state"], "unknown", "{case}: {list}");
        let error = list[0]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("asking Twilio whether it was sent failed") && error.contains(fix),
            "{case}: {error}"
        );
        let text = stdout(&cli(&config, &["queue", "list"]));
        assert!(
            text.contains(fix) && text.contains("next check with Twilio"),
            "{text}"
        );
        assert_eq!(creates(&twilio, TO), 1, "{case}");
        assert_eq!(agent.next_within(Duration::from_millis(1)), None);
        // Twilio answers properly again: found, once.
        twilio.unroute("GET", &path);
        let sent = agent.next_of("sent");
        assert_eq!(
            sent["sids"],
            json!([created_sid(&twilio, TO)]),
            "{case}: {sent}"
        );
        assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
        assert_eq!(creates(&twilio, TO), 1, "{case}: exactly once");
        assert_eq!(queue_list(&config), json!([]));
        assert_eq!(gw.stop().code(), Some(0));
    }
}

/// A list answer that is not what Twilio sends (HTML from a proxy, JSON without
/// `messages`) is a failed lookup, logged and asked again, never taken for "not found".
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_list_answer_is_a_logged_skip_not_a_resend() {
    let Setup {
        t: _t,
        twilio,
        config,
        gw,
        mut agent,
    } = setup();
    let path = FakeTwilio::messages_path();
    twilio.route_raw("GET", &path, 200, "<html>captive portal</html>");
    twilio.push(Canned::Lost);
    agent.send(json!({"type": "send", "text": "through the proxy", "ref": "m"}));
    gw.assert_log_soon("is not JSON", Duration::from_secs(10));
    twilio.route("GET", &path, 200, json!({"message_list": []}));
    gw.assert_log_soon("message list has no", Duration::from_secs(10));
    // A huge answer is not read into memory.
    let huge = format!("{{\"messages\": [], \"pad\": \"{}\"}}", "x".repeat(5 << 20));
    twilio.route_raw("GET", &path, 200, &huge);
    assert!(
        gw.wait_log("KiB; not read", Duration::from_secs(30)),
        "{}",
        gw.log()
    );
    let before = lookups(&twilio).len();
    assert!(wait_until(Duration::from_secs(30), || lookups(&twilio)
        .len()
        > before));
    assert_eq!(creates(&twilio, TO), 1, "nothing sent blind");
    assert_eq!(queue_list(&config)[0]["state"], "unknown");
    assert_eq!(agent.next_within(Duration::from_millis(1)), None);
    // Twilio (the fake's own list) answers: it has no such message, twice → sent once.
    twilio.unroute("GET", &path);
    let sent = agent.next_of("sent");
    assert_eq!(sent["ref"], "m");
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert_eq!(
        creates(&twilio, TO),
        2,
        "the lost attempt and exactly one resend"
    );
    assert_eq!(gw.stop().code(), Some(0));
}

/// Two identical texts to the same person; the first is sent, the second's outcome is
/// unknown and Twilio never created it. The lookup lists the first (same recipient,
/// sender and body, a moment earlier): it must not be credited with the first's SID,
/// which another send holds, and it is sent, once (issue 20 item 3).
#[tokio::test(flavor = "multi_thread")]
async fn an_identical_earlier_text_is_not_taken_for_an_unknown_send() {
    let Setup {
        t: _t,
        twilio,
        config,
        gw,
        mut agent,
    } = setup();
    agent.send(json!({"type": "send", "text": "see you at 6", "ref": "first"}));
    let first = agent.next_of("sent");
    assert_eq!(first["ref"], "first");
    let first_sid = first["sids"][0].as_str().unwrap().to_string();
    twilio.push(Canned::Lost);
    agent.send(json!({"type": "send", "text": "see you at 6", "ref": "second"}));
    let second = agent.next_of("sent");
    assert_eq!(second["ref"], "second");
    assert_ne!(second["sids"][0], first_sid.as_str(), "{second}");
    gw.assert_log_has("sending it (once)");
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    let sends = twilio.sends_to(TO);
    assert_eq!(sends.len(), 3, "the first, the lost attempt and one resend");
    assert_eq!(
        second["sids"],
        json!([sends[2].created.clone().unwrap()]),
        "credited with the resend's SID"
    );
    assert_eq!(queue_list(&config), json!([]));
    assert_eq!(gw.stop().code(), Some(0));
}

/// A listing that ignores `DateSent>=` (every message ever, newest first) is read only
/// up to the first message older than the attempt, not to the page cap, at each lookup.
#[tokio::test(flavor = "multi_thread")]
async fn a_lookup_stops_at_the_first_message_older_than_the_attempt() {
    let Setup {
        t: _t,
        twilio,
        config,
        gw,
        mut agent,
    } = setup();
    twilio.paginate(1);
    let old = (time::OffsetDateTime::now_utc() - time::Duration::days(2))
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap();
    for i in 0..8 {
        twilio.list_also(json!({
            "sid": format!("SMold{i:028}"), "to": TO, "from": FROM,
            "body": format!("an old text {i}"), "direction": "outbound-api",
            "status": "delivered", "date_created": old, "date_sent": old,
        }));
    }
    twilio.push(Canned::Lost);
    agent.send(json!({"type": "send", "text": "only the first page", "ref": "o"}));
    let sent = agent.next_of("sent");
    assert_eq!(sent["ref"], "o");
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert_eq!(creates(&twilio, TO), 2, "the lost attempt and one resend");
    let q = lookups(&twilio);
    assert_eq!(q.len(), 2, "one page at each of the two lookups: {q:?}");
    assert!(q.iter().all(|q| !q.contains("Page=")), "{q:?}");
    assert_eq!(gw.stop().code(), Some(0));
}
