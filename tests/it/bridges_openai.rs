//! `smsgate agent openai` end to end: the real daemon and bridge binaries, a recording
//! stand-in for a chat-completions server, and Prism serving OpenAI's own spec.

use crate::bridges;
use crate::common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bridges::*;
use common::*;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Bytes, Frame};
use serde_json::{json, Value};

const A: &str = "+15557650001";
const B: &str = "+15557650002";
const KEY: &str = "sk-test-not-a-real-key-123";

// ---- the stand-in -----------------------------------------------------------------

#[derive(Debug, Clone)]
enum Canned {
    /// A completion with this content.
    Content(String),
    /// A completion with this `message` object.
    Message(Value),
    /// Any status and body, with an optional Retry-After.
    Raw(u16, String, Option<u64>),
    /// 200 with a body of this many bytes of spaces, streamed.
    Huge(usize),
    /// Never answer.
    Hang,
}

#[derive(Debug, Clone)]
struct Call {
    authorization: Option<String>,
    body: Value,
    at: std::time::Instant,
}

#[derive(Clone)]
struct StandIn {
    addr: std::net::SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    /// (conversation `user` it applies to, answer), in order.
    script: Arc<Mutex<VecDeque<(String, Canned)>>>,
}

struct HugeBody(usize);

static SPACES: [u8; 65536] = [b' '; 65536];

impl hyper::body::Body for HugeBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        let n = self.0.min(SPACES.len());
        self.0 -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&SPACES[..n])))))
    }
}

impl StandIn {
    fn start() -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let (c, s) = (calls.clone(), script.clone());
        let addr = serve_http(move |req| {
            let (c, s) = (c.clone(), s.clone());
            async move { Ok::<_, Infallible>(answer(req, c, s).await) }
        });
        Self {
            addr,
            calls,
            script,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn push(&self, user: &str, c: Canned) {
        self.script.lock().unwrap().push_back((user.into(), c));
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The conversation id (`user`) of the first call whose new text was `text`.
    fn user_of(&self, text: &str) -> String {
        self.calls()
            .into_iter()
            .find(|c| {
                c.body["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .is_some_and(|m| m["content"] == text)
            })
            .and_then(|c| c.body["user"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no call for {text:?}"))
    }

    fn calls_for(&self, user: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.body["user"] == user)
            .collect()
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    calls: Arc<Mutex<Vec<Call>>>,
    script: Arc<Mutex<VecDeque<(String, Canned)>>>,
) -> hyper::Response<BoxBody<Bytes, Infallible>> {
    let ok_path = req.method() == "POST" && req.uri().path() == "/v1/chat/completions";
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let user = body["user"].as_str().unwrap_or("").to_string();
    let n = {
        let mut c = calls.lock().unwrap();
        c.push(Call {
            authorization,
            body: body.clone(),
            at: std::time::Instant::now(),
        });
        c.iter().filter(|c| c.body["user"] == user.as_str()).count()
    };
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("?")
        .to_string();
    // A script entry answers a call of its conversation, or a call whose new text is
    // exactly its key (the daemon picks conversation ids, so a test scripts a call by
    // the text it is about to send).
    let canned = {
        let mut s = script.lock().unwrap();
        let i = s.iter().position(|(u, _)| *u == user || *u == last);
        i.and_then(|i| s.remove(i)).map(|(_, c)| c)
    };
    let canned = if ok_path {
        canned.unwrap_or_else(|| Canned::Content(format!("reply {n}: {last}")))
    } else {
        Canned::Raw(404, "no such path".into(), None)
    };
    let (status, body, retry_after): (u16, BoxBody<Bytes, Infallible>, Option<u64>) = match canned {
        Canned::Content(c) => (
            200,
            Full::new(Bytes::from(
                json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": c}}]})
                .to_string(),
            ))
            .boxed(),
            None,
        ),
        Canned::Message(message) => (
            200,
            Full::new(Bytes::from(
                json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}]})
                .to_string(),
            ))
            .boxed(),
            None,
        ),
        Canned::Raw(status, body, ra) => (status, Full::new(Bytes::from(body)).boxed(), ra),
        Canned::Huge(n) => (200, HugeBody(n).boxed(), None),
        Canned::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (500, Full::new(Bytes::new()).boxed(), None)
        }
    };
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if let Some(ra) = retry_after {
        resp.headers_mut()
            .insert("retry-after", ra.to_string().parse().unwrap());
    }
    resp
}

// ---- set-up -----------------------------------------------------------------------

impl Setup {
    /// `smsgate agent openai` on this daemon, against the chat-completions server at
    /// `base_url`.
    fn openai(&self, base_url: &str, extra: &[&str]) -> Bridge {
        let mut args = self.bridge_args("openai");
        args.extend(
            [
                "--base-url",
                base_url,
                "--model",
                "test-model",
                "--api-key-env",
                "SMSGATE_TEST_API_KEY",
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|a| a.to_string()));
        let b = Bridge::start(&args, &[("SMSGATE_TEST_API_KEY", KEY)]);
        b.assert_log_soon("bridge connected", Duration::from_secs(20));
        b
    }
}

fn roles_and_contents(call: &Call) -> Vec<(String, String)> {
    call.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn transcript_user_system_bearer_history_restart_and_retry() {
    let st = setup();
    let model = StandIn::start();
    let bridge = st.openai(
        &model.url(),
        &["--system", "Be brief.", "--history", "2", "--coalesce", "0"],
    );
    st.text(A, "one").await;
    assert_eq!(st.sms(A, 1), "reply 1: one");
    // `user` is the daemon's conversation id (opaque, nothing of the number).
    let conv_a = model.user_of("one");
    assert!(
        conv_a.starts_with("c-") && !conv_a.contains("555"),
        "{conv_a}"
    );
    let c = &model.calls_for(&conv_a)[0];
    assert_eq!(c.authorization.as_deref(), Some(&*format!("Bearer {KEY}")));
    assert_eq!(c.body["model"], "test-model");
    assert_eq!(c.body["user"], conv_a.as_str());
    assert_eq!(
        roles_and_contents(c),
        pairs(&[("system", "Be brief."), ("user", "one")])
    );
    st.text(A, "two").await;
    st.sms(A, 2);
    assert_eq!(
        roles_and_contents(&model.calls_for(&conv_a)[1]),
        pairs(&[
            ("system", "Be brief."),
            ("user", "one"),
            ("assistant", "reply 1: one"),
            ("user", "two")
        ])
    );
    // Another sender has a transcript of its own.
    st.text(B, "hello").await;
    assert_eq!(st.sms(B, 1), "reply 1: hello");
    let conv_b = model.user_of("hello");
    assert_ne!(conv_a, conv_b);
    assert_eq!(
        roles_and_contents(&model.calls_for(&conv_b)[0]),
        pairs(&[("system", "Be brief."), ("user", "hello")])
    );

    // A restart keeps the transcript; a 503 is retried (after its Retry-After).
    assert_eq!(bridge.stop().code(), Some(0));
    let bridge = st.openai(
        &model.url(),
        &["--system", "Be brief.", "--history", "2", "--coalesce", "0"],
    );
    model.push(
        "three",
        Canned::Raw(503, r#"{"error":{"message":"overloaded"}}"#.into(), Some(1)),
    );
    st.text(A, "three").await;
    assert_eq!(st.sms(A, 3), "reply 4: three");
    let calls = model.calls_for(&conv_a);
    assert_eq!(calls.len(), 4);
    assert_eq!(roles_and_contents(&calls[2]), roles_and_contents(&calls[3]));
    bridge.assert_log_has("HTTP 503");
    bridge.assert_log_has("retrying in 1 s");
    // --history 2: the oldest turn drops out.
    st.text(A, "four").await;
    st.sms(A, 4);
    assert_eq!(
        roles_and_contents(&model.calls_for(&conv_a)[4]),
        pairs(&[
            ("system", "Be brief."),
            ("user", "two"),
            ("assistant", "reply 2: two"),
            ("user", "three"),
            ("assistant", "reply 4: three"),
            ("user", "four")
        ])
    );
    // The transcript is private; neither the key nor a number is in the log.
    let dir = st.t.path().join("bridge-state");
    for f in std::fs::read_dir(&dir).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let md = f.unwrap().metadata().unwrap();
        assert_eq!(md.permissions().mode() & 0o077, 0);
    }
    let log = bridge.log();
    assert!(!log.contains(KEY) && !log.contains(A), "{log}");
    assert_eq!(bridge.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_answers_keep_the_message_waiting_until_a_good_one() {
    let st = setup();
    let model = StandIn::start();
    let bridge = st.openai(&model.url(), &["--timeout", "2", "--coalesce", "0"]);
    // Scripted by A's text: each retry of "hi" takes the next bad answer.
    let conv_a = "hi";
    model.push(
        conv_a,
        Canned::Raw(200, "<html>502 Bad Gateway</html>".into(), None),
    );
    model.push(conv_a, Canned::Raw(200, r#"{"choices":[]}"#.into(), None));
    model.push(conv_a, Canned::Huge(100 * 1024 * 1024));
    model.push(conv_a, Canned::Hang);
    st.text(A, "hi").await;
    // Meanwhile another conversation is answered: A's trouble holds up only A.
    st.text(B, "side by side").await;
    assert_eq!(
        nth_sms(&st.twilio, B, 1, Duration::from_secs(10)),
        "reply 1: side by side"
    );
    assert!(st.twilio.sends_to(A).is_empty());
    let r = nth_sms(&st.twilio, A, 1, Duration::from_secs(60));
    assert_eq!(r, "reply 5: hi");
    let log = bridge.log();
    for needle in [
        "the response is not JSON",
        "has no choices[0].message.content",
        "larger than 4 MiB",
        "no answer within 2 s",
        "the message stays unacknowledged",
    ] {
        assert!(log.contains(needle), "{needle:?} not in:\n{log}");
    }
    let rss = rss_kib(bridge.child.id());
    eprintln!("bridge RSS after a 100 MB body: {rss} KiB");
    assert!(rss < 100 * 1024, "bridge RSS {rss} KiB after a 100 MB body");
    assert_eq!(st.twilio.sends_to(A).len(), 1);
    assert_eq!(bridge.stop().code(), Some(0));
}

/// The model server answers 307 to another host (a second port): the conversation and
/// the key are not sent on, the call fails naming the status and the host, and the
/// message stays unacknowledged (issue 20 item 2).
#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_is_not_followed_and_the_message_stays_unacknowledged() {
    let st = setup();
    let elsewhere = StandIn::start();
    let (redirecting, hits) = redirector(&format!("http://{}", elsewhere.addr));
    let bridge = st.openai(
        &format!("{redirecting}/v1"),
        &["--timeout", "2", "--coalesce", "0"],
    );
    st.text(A, "where does this go?").await;
    let host = elsewhere.addr.to_string();
    bridge.assert_log_soon(
        &format!("a redirect to {host}, not followed"),
        Duration::from_secs(20),
    );
    bridge.assert_log_has("HTTP 307");
    assert!(bridge.log().contains("the message stays unacknowledged"));
    assert!(*hits.lock().unwrap() >= 1);
    assert!(elsewhere.calls().is_empty(), "{:?}", elsewhere.calls());
    assert_eq!(st.gw.status(&st.t.config_path())["agentQueue"], 1);
    assert!(st.twilio.sends_to(A).is_empty());
    assert!(!bridge.log().contains(KEY));
    assert_eq!(bridge.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn bursts_coalesce_and_long_replies_are_cut() {
    let st = setup();
    let model = StandIn::start();
    let bridge = st.openai(&model.url(), &["--coalesce", "1500", "--max-chars", "500"]);
    for body in ["hey", "can you", "check my 3pm"] {
        st.text(A, body).await;
    }
    assert_eq!(st.sms(A, 1), "reply 1: hey\ncan you\ncheck my 3pm");
    st.text(A, "and 4pm?").await;
    assert_eq!(st.sms(A, 2), "reply 2: and 4pm?");
    assert_eq!(model.calls_for(&model.user_of("and 4pm?")).len(), 2);

    model.push("write a novel", Canned::Content("word ".repeat(20_000)));
    st.text(B, "write a novel").await;
    let r = st.sms(B, 1);
    assert!(r.chars().count() <= 500 && r.ends_with('…'), "{r}");
    assert_eq!(st.twilio.sends_to(B).len(), 1, "one SMS, not 70");
    assert!(bridge.wait_log("cut to --max-chars 500", Duration::from_secs(5)));
    assert_eq!(bridge.stop().code(), Some(0));
    assert_eq!(st.gw.stop().code(), Some(0));
    assert!(st.t.store().inbox().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bridge_killed_mid_call_loses_nothing() {
    let st = setup();
    let model = StandIn::start();
    let mut bridge = st.openai(&model.url(), &["--coalesce", "0"]);
    model.push("are you there?", Canned::Hang);
    st.text(A, "are you there?").await;
    assert!(wait_until(Duration::from_secs(20), || model.calls().len() == 1));
    let conv_a = model.user_of("are you there?");
    bridge.child.kill().unwrap();
    let _ = bridge.child.wait();
    let _bridge = st.openai(&model.url(), &["--coalesce", "0"]);
    assert_eq!(st.sms(A, 1), "reply 2: are you there?");
    assert_eq!(model.calls_for(&conv_a).len(), 2);
    assert_eq!(st.twilio.sends_to(A).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn slash_new_starts_an_empty_transcript() {
    let st = setup();
    let model = StandIn::start();
    let _bridge = st.openai(&model.url(), &["--coalesce", "0"]);
    st.text(A, "one").await;
    st.sms(A, 1);
    st.text(A, "/new").await;
    st.sms(A, 2);
    st.text(A, "fresh").await;
    st.sms(A, 3);
    let last = model.calls().last().cloned().unwrap();
    assert_eq!(roles_and_contents(&last), pairs(&[("user", "fresh")]));
    assert_ne!(
        last.body["user"],
        model.user_of("one"),
        "a new conversation id"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_with_only_tool_calls_gets_fail_with_backoff_then_the_dead_letters() {
    let st = setup_with(&[("SMSGATE_AGENT_RETRY_MS", "100")]);
    let model = StandIn::start();
    let bridge = st.openai(&model.url(), &["--coalesce", "0"]);
    let tool_calls = json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]});
    for _ in 0..5 {
        model.push("what's on today?", Canned::Message(tool_calls.clone()));
    }
    st.text(A, "what's on today?").await;
    let list = st.wait_dead_letter(&bridge);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["attempts"], 5, "{}", list[0]);
    let error = list[0]["error"].as_str().unwrap();
    assert!(error.contains("only tool_calls"), "{error}");
    // Five calls, spaced by the daemon's backoff (100, 200, 400, 800 ms), not a loop.
    let calls = model.calls();
    assert_eq!(calls.len(), 5, "{calls:?}");
    for (n, pair) in calls.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(100 << n),
            "call {} came {gap:?} after the one before",
            n + 2
        );
    }
    assert!(st.twilio.sends_to(A).is_empty());
    let log = bridge.log();
    assert!(
        log.contains("turn failed") && log.contains("only tool_calls"),
        "{log}"
    );
    assert!(!log.contains(KEY) && !log.contains(A), "{log}");
    assert_eq!(bridge.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_answer_is_not_a_reply_the_text_is_asked_again() {
    let st = setup_with(&[("SMSGATE_AGENT_RETRY_MS", "100")]);
    let model = StandIn::start();
    let bridge = st.openai(&model.url(), &["--coalesce", "0"]);
    model.push("hello?", Canned::Content("  \n".into()));
    st.text(A, "hello?").await;
    // The empty answer got `fail`; the redelivery is answered.
    assert_eq!(st.sms(A, 1), "reply 2: hello?");
    bridge.assert_log_has("no text (empty content)");
    assert_eq!(model.calls().len(), 2);
    // Nothing was remembered of the empty turn.
    let c = &model.calls()[1];
    assert_eq!(roles_and_contents(c), pairs(&[("user", "hello?")]));
    assert!(queue_list(&st.config).is_empty());
    assert_eq!(bridge.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn transcripts_idle_for_30_days_are_deleted() {
    let st = setup();
    let dir = st.t.path().join("bridge-state");
    std::fs::create_dir_all(&dir).unwrap();
    // Two transcripts as an earlier bridge left them (names are SHA-256 hex).
    let old = dir.join(format!("{}.json", "a".repeat(64)));
    let recent = dir.join(format!("{}.json", "b".repeat(64)));
    for p in [&old, &recent] {
        std::fs::write(p, r#"{"conversation":"c-x","turns":[]}"#).unwrap();
    }
    let forty_days_ago = std::time::SystemTime::now() - Duration::from_secs(40 * 86400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(forty_days_ago)
        .unwrap();
    let model = StandIn::start();
    let bridge = st.openai(&model.url(), &["--coalesce", "0"]);
    assert!(bridge.wait_log(
        "deleted 1 transcript(s) idle for over 30 days",
        Duration::from_secs(5)
    ));
    assert!(!old.exists());
    assert!(recent.exists());
    assert_eq!(bridge.stop().code(), Some(0));
}

// ---- OpenAI's spec under Prism ------------------------------------------------------

struct Prism(std::process::Child);

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prism() -> (Prism, u16) {
    use std::io::BufRead;
    let prism = repo().join(".tools/node/node_modules/.bin/prism");
    assert!(
        prism.exists(),
        "this test needs Prism: run scripts/install-test-tools"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = repo().join("tests/contract/openai_chat.trimmed.json");
    let mut child = std::process::Command::new(prism)
        .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string()])
        .arg(spec)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("Prism is listening") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("Prism did not start");
    (Prism(child), port)
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_match_openais_spec_under_prism() {
    let (_prism, port) = start_prism();
    // Prism answers a request that breaks the spec with 422 (checked here, so a spec
    // that Prism silently fails to compile cannot make this test pass vacuously).
    let bad = client()
        .post(format!("http://127.0.0.1:{port}/chat/completions"))
        .bearer_auth("k")
        .json(&json!({"model": "m", "messages": [{"role": "bogus", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 422);

    let st = setup();
    let bridge = st.openai(
        &format!("http://127.0.0.1:{port}"),
        &["--system", "Answer briefly.", "--coalesce", "0"],
    );
    st.text(A, "hello").await;
    // The spec's example completion says "string".
    assert_eq!(st.sms(A, 1), "string");
    // With history (user and assistant turns) too.
    st.text(A, "and again").await;
    assert_eq!(st.sms(A, 2), "string");
    let log = bridge.log();
    assert!(!log.contains("HTTP 4"), "{log}");
    assert_eq!(bridge.stop().code(), Some(0));
}
