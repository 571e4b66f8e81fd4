//! Test harness: the real `smsgate` binary in a temp dir, a recording fake Twilio on
//! port 0, and a webhook signer written independently of smsgate's own.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

pub const SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "test-auth-token-1";
pub const FROM: &str = "+15550001111";
pub const PUBLIC: &str = "https://sms.example.test/webhooks/sms";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_smsgate")
}

// ---- signing (independent of smsgate::twilio::signature) ----------------------------

/// Twilio's algorithm, straight from its docs: URL + sorted name/value pairs,
/// HMAC-SHA1, Base64.
pub fn sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub fn inbound<'a>(sid: &'a str, from: &'a str, body: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MessageSid", sid),
        ("SmsSid", sid),
        ("AccountSid", SID),
        ("From", from),
        ("To", FROM),
        ("Body", body),
        ("NumMedia", "0"),
        ("SmsStatus", "received"),
        ("ApiVersion", "2010-04-01"),
    ]
}

pub fn form(params: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

// ---- the fake Twilio --------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub form: Vec<(String, String)>,
    pub at: Instant,
    /// For a message create: the SID of the message Twilio created (also when its
    /// answer never came back), listed by `GET …/Messages.json` like Twilio would.
    pub created: Option<String>,
}

impl Recorded {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated field, in order (e.g. all `MediaUrl`s).
    pub fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Debug, Clone)]
pub enum Canned {
    Json(u16, String, Option<u64>),
    /// Never answer (until the client gives up).
    Hang,
    /// Close the connection without an answer (after reading the request).
    Reset,
    /// Never answer, and create nothing (the request died inside Twilio).
    Lost,
}

#[derive(Clone)]
pub struct FakeTwilio {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub script: Arc<Mutex<VecDeque<Canned>>>,
    pub routes: Arc<Mutex<Vec<Route>>>,
    pub knobs: Arc<Mutex<Knobs>>,
}

/// A fixed answer: (method, path prefix, status, JSON body).
pub type Route = (String, String, u16, String);

/// How the fake's own message list behaves; the defaults are Twilio on a good day.
#[derive(Debug, Default)]
pub struct Knobs {
    /// The fake's clock minus the real one (Twilio's clock vs ours): moves
    /// `date_created`/`date_sent`, the `DateSent>=` filter and the `Date` header.
    pub clock_skew_ms: i64,
    /// Messages per page of the list (`next_page_uri` to the next); all on one page
    /// when unset.
    pub list_page_size: Option<usize>,
    /// Messages listed before (newer than) the ones the fake created, kept to the
    /// requested `To` by their `to` field.
    pub listed_extra: Vec<serde_json::Value>,
    /// Set: on a message create, fetch each `MediaUrl` first, as Twilio does, with the
    /// URL's origin replaced by this base (the gateway's local address); the
    /// answers are kept in `fetched`.
    pub fetch_media_via: Option<String>,
    pub fetched: Vec<Fetched>,
}

/// What the fake got when it fetched a `MediaUrl`.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub url: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub content_length: Option<String>,
    pub bytes: Vec<u8>,
}

impl FakeTwilio {
    /// Starts on its own thread and runtime, so it outlives any one test's runtime.
    pub fn start() -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let routes: Arc<Mutex<Vec<Route>>> = Arc::new(Mutex::new(Vec::new()));
        let knobs: Arc<Mutex<Knobs>> = Arc::new(Mutex::new(Knobs::default()));
        let (r, s, ro, kn) = (
            requests.clone(),
            script.clone(),
            routes.clone(),
            knobs.clone(),
        );
        let addr = serve_http(move |req| {
            let (r, s, ro, kn) = (r.clone(), s.clone(), ro.clone(), kn.clone());
            answer_dated(req, r, s, ro, kn)
        });
        Self {
            addr,
            requests,
            script,
            routes,
            knobs,
        }
    }

    /// Like [`FakeTwilio::route`], with a body that need not be JSON (a proxy's HTML, a
    /// truncated answer).
    pub fn route_raw(&self, method: &str, path: &str, status: u16, body: &str) {
        self.routes
            .lock()
            .unwrap()
            .insert(0, (method.into(), path.into(), status, body.into()));
    }

    /// Removes the fixed answers for `method` on `path`: the fake's own behaviour again.
    pub fn unroute(&self, method: &str, path: &str) {
        self.routes
            .lock()
            .unwrap()
            .retain(|(m, p, _, _)| !(m == method && p == path));
    }

    /// Sets the fake's clock this far from the real one (see [`Knobs::clock_skew_ms`]).
    pub fn set_clock_skew(&self, ms: i64) {
        self.knobs.lock().unwrap().clock_skew_ms = ms;
    }

    /// Splits the fake's message list into pages of `n` (see [`Knobs::list_page_size`]).
    pub fn paginate(&self, n: usize) {
        self.knobs.lock().unwrap().list_page_size = Some(n);
    }

    /// Lists `message` too, as newer than everything the fake created.
    pub fn list_also(&self, message: serde_json::Value) {
        self.knobs.lock().unwrap().listed_extra.push(message);
    }

    /// Fetch each `MediaUrl` of a create before answering it, through `base`
    /// (see [`Knobs::fetch_media_via`]).
    pub fn fetch_media_via(&self, base: &str) {
        self.knobs.lock().unwrap().fetch_media_via = Some(base.to_string());
    }

    /// The media fetched so far.
    pub fn fetched(&self) -> Vec<Fetched> {
        self.knobs.lock().unwrap().fetched.clone()
    }

    /// The media fetched, once there are at least `n` (the fake records a create
    /// before it fetches its MediaUrls, so a send can be seen before its fetches).
    pub fn wait_fetched(&self, n: usize, timeout: Duration) -> Vec<Fetched> {
        let done = wait_until(timeout, || self.fetched().len() >= n);
        let got = self.fetched();
        assert!(
            done,
            "waited {timeout:?} for {n} media fetches, got {}",
            got.len()
        );
        got
    }

    /// The path of the account's message list (creates and lookups).
    pub fn messages_path() -> String {
        format!("/2010-04-01/Accounts/{SID}/Messages.json")
    }

    /// Answers `method` requests whose path starts with `path` with `status` and `body`,
    /// until replaced (later routes win).
    pub fn route(&self, method: &str, path: &str, status: u16, body: serde_json::Value) {
        self.routes
            .lock()
            .unwrap()
            .insert(0, (method.into(), path.into(), status, body.to_string()));
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, c: Canned) {
        self.script.lock().unwrap().push_back(c);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Message creations so far.
    pub fn sends(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/Messages.json"))
            .collect()
    }

    /// What `channels status --probe` reads first: the account (active) and its recent
    /// messages, `messages` being the list Twilio returns.
    pub fn serve_account(&self, messages: serde_json::Value) {
        self.route(
            "GET",
            &format!("/2010-04-01/Accounts/{SID}.json"),
            200,
            serde_json::json!({"sid": SID, "friendly_name": "Test", "status": "active"}),
        );
        self.route(
            "GET",
            &format!("/2010-04-01/Accounts/{SID}/Messages.json"),
            200,
            serde_json::json!({ "messages": messages }),
        );
    }

    pub fn sends_to(&self, to: &str) -> Vec<Recorded> {
        self.sends()
            .into_iter()
            .filter(|r| r.field("To") == Some(to))
            .collect()
    }

    /// Waits up to `timeout` for at least `n` message creations and returns them all;
    /// fails the test when they do not come in time (rather than handing back fewer and
    /// leaving the caller to notice, or not).
    pub fn wait_sends(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let arrived = wait_until(timeout, || self.sends().len() >= n);
        let sends = self.sends();
        assert!(
            arrived,
            "waited {timeout:?} for {n} sends, got {}: {:?}",
            sends.len(),
            sends.iter().map(|r| r.field("Body")).collect::<Vec<_>>()
        );
        sends
    }
}

/// A server that answers every request with `307 Temporary Redirect` to
/// `{target}{path and query}` (another host: what a hostile or misconfigured
/// `apiBaseUrl` / `--base-url` does). Returns its base URL and how many requests it got.
pub fn redirector(target: &str) -> (String, Arc<Mutex<usize>>) {
    let hits = Arc::new(Mutex::new(0usize));
    let (h, target) = (hits.clone(), target.trim_end_matches('/').to_string());
    let addr = serve_http(move |req| {
        let (h, target) = (h.clone(), target.clone());
        async move {
            let to = format!(
                "{target}{}",
                req.uri().path_and_query().map_or("/", |p| p.as_str())
            );
            let _ = req.into_body().collect().await;
            *h.lock().unwrap() += 1;
            let mut resp = hyper::Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = hyper::StatusCode::TEMPORARY_REDIRECT;
            resp.headers_mut().insert("location", to.parse().unwrap());
            Ok::<_, std::io::Error>(resp)
        }
    });
    (format!("http://{addr}"), hits)
}

/// Serves HTTP/1.1 on a fresh port of 127.0.0.1 with `handle` answering each request,
/// from its own thread and runtime (so the server outlives any one test's runtime);
/// returns the address.
pub fn serve_http<H, F, B, E>(handle: H) -> SocketAddr
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<hyper::Response<B>, E>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handle = handle.clone();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                        .await;
                });
            }
        });
    });
    addr
}

/// The resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The fake's clock: the real one moved by [`Knobs::clock_skew_ms`].
fn fake_time(at: std::time::SystemTime, skew_ms: i64) -> time::OffsetDateTime {
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + skew_ms;
    time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap()
}

/// Every answer carries the fake's clock in its `Date` header, as Twilio's does.
async fn answer_dated(
    req: hyper::Request<hyper::body::Incoming>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<Canned>>>,
    routes: Arc<Mutex<Vec<Route>>>,
    knobs: Arc<Mutex<Knobs>>,
) -> Result<hyper::Response<Full<Bytes>>, std::io::Error> {
    let mut resp = answer(req, requests, script, routes, knobs.clone()).await?;
    let skew = knobs.lock().unwrap().clock_skew_ms;
    let date = fake_time(std::time::SystemTime::now(), skew)
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap();
    resp.headers_mut().insert("date", date.parse().unwrap());
    Ok(resp)
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<Canned>>>,
    routes: Arc<Mutex<Vec<Route>>>,
    knobs: Arc<Mutex<Knobs>>,
) -> Result<hyper::Response<Full<Bytes>>, std::io::Error> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(String::from);
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let media_get = method == "GET" && path.contains("/Media/");
    let authed = authorization.is_some();
    let n = {
        let mut r = requests.lock().unwrap();
        r.push(Recorded {
            method,
            path,
            query,
            authorization,
            form,
            at: Instant::now(),
            created: None,
        });
        r.len()
    };
    if media_get {
        let mut resp =
            hyper::Response::new(Full::new(Bytes::from_static(b"\xff\xd8fake-jpeg-bytes")));
        if !authed {
            *resp.status_mut() = hyper::StatusCode::UNAUTHORIZED;
        }
        resp.headers_mut()
            .insert("content-type", "image/jpeg".parse().unwrap());
        return Ok(resp);
    }
    let fixed = {
        let last = requests.lock().unwrap().last().cloned().unwrap();
        routes
            .lock()
            .unwrap()
            .iter()
            .find(|(m, p, _, _)| *m == last.method && last.path.starts_with(p.as_str()))
            .cloned()
    };
    let (is_create, list_to) = {
        let r = requests.lock().unwrap();
        let me = &r[n - 1];
        let messages = me.path.ends_with("/Messages.json");
        let to = me.query.as_deref().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "To")
                .map(|(_, v)| v.into_owned())
        });
        (
            messages && me.method == "POST",
            (messages && me.method == "GET").then_some(to),
        )
    };
    let via = knobs.lock().unwrap().fetch_media_via.clone();
    if let (true, Some(via), None) = (is_create, via, &fixed) {
        let urls: Vec<String> = {
            let r = requests.lock().unwrap();
            r[n - 1]
                .form
                .iter()
                .filter(|(k, _)| k == "MediaUrl")
                .map(|(_, v)| v.clone())
                .collect()
        };
        let http = reqwest::Client::new();
        for url in urls {
            let parsed = reqwest::Url::parse(&url).unwrap();
            let local = format!("{via}{}", parsed.path());
            let got = match http.get(&local).send().await {
                Ok(resp) => {
                    let h = |n: &str| {
                        resp.headers()
                            .get(n)
                            .map(|v| v.to_str().unwrap_or("").to_string())
                    };
                    let (status, ct, cl) = (
                        resp.status().as_u16(),
                        h("content-type"),
                        h("content-length"),
                    );
                    let bytes = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    Fetched {
                        url: url.clone(),
                        status,
                        content_type: ct,
                        content_length: cl,
                        bytes,
                    }
                }
                Err(_) => Fetched {
                    url: url.clone(),
                    status: 0,
                    content_type: None,
                    content_length: None,
                    bytes: Vec::new(),
                },
            };
            knobs.lock().unwrap().fetched.push(got);
        }
    }
    if let (Some(to), None) = (&list_to, &fixed) {
        // Twilio's list of the messages it created, newest first, to `To` and sent on
        // or after the `DateSent>=` day (on the fake's clock), a page at a time.
        let (path, query) = {
            let r = requests.lock().unwrap();
            (
                r[n - 1].path.clone(),
                r[n - 1].query.clone().unwrap_or_default(),
            )
        };
        let param = |name: &str| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let since = param("DateSent>");
        let page: usize = param("Page").and_then(|p| p.parse().ok()).unwrap_or(0);
        let k = knobs.lock().unwrap();
        let mut messages: Vec<serde_json::Value> = k
            .listed_extra
            .iter()
            .rev()
            .filter(|m| to.as_ref().is_none_or(|t| m["to"] == t.as_str()))
            .cloned()
            .collect();
        let r = requests.lock().unwrap();
        messages.extend(
            r.iter()
                .rev()
                .filter(|m| m.created.is_some())
                .filter(|m| {
                    to.as_ref()
                        .is_none_or(|t| m.field("To") == Some(t.as_str()))
                })
                .filter_map(|m| {
                    let created = fake_time(
                        std::time::SystemTime::now() - m.at.elapsed(),
                        k.clock_skew_ms,
                    );
                    let day = format!(
                        "{:04}-{:02}-{:02}",
                        created.year(),
                        u8::from(created.month()),
                        created.day()
                    );
                    if since.as_ref().is_some_and(|s| day < *s) {
                        return None;
                    }
                    let date = created
                        .format(&time::format_description::well_known::Rfc2822)
                        .unwrap();
                    Some(serde_json::json!({
                        "sid": m.created, "to": m.field("To"), "from": m.field("From"),
                        "body": m.field("Body"), "direction": "outbound-api",
                        "status": "sent", "date_created": date, "date_sent": date,
                        "messaging_service_sid": m.field("MessagingServiceSid"),
                    }))
                }),
        );
        drop(r);
        let size = k.list_page_size.unwrap_or(usize::MAX).max(1);
        drop(k);
        let start = page.saturating_mul(size).min(messages.len());
        let end = start.saturating_add(size).min(messages.len());
        let next = (end < messages.len()).then(|| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in form_urlencoded::parse(query.as_bytes()) {
                if k != "Page" && k != "PageToken" {
                    q.append_pair(&k, &v);
                }
            }
            q.append_pair("Page", &(page + 1).to_string());
            q.append_pair("PageToken", &format!("PA{}", page + 1));
            format!("{path}?{}", q.finish())
        });
        let body = serde_json::json!({
            "messages": messages[start..end], "next_page_uri": next, "page": page,
        })
        .to_string();
        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        return Ok(resp);
    }
    let canned = match fixed {
        Some((_, _, status, body)) => Some(Canned::Json(status, body, None)),
        None => script.lock().unwrap().pop_front(),
    };
    if is_create && matches!(canned, None | Some(Canned::Hang)) {
        requests.lock().unwrap()[n - 1].created = Some(format!("SM{n:032}"));
    }
    let (status, body, retry_after) = match canned {
        Some(Canned::Hang | Canned::Lost) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (500, String::new(), None)
        }
        Some(Canned::Json(status, body, ra)) => (status, body, ra),
        Some(Canned::Reset) => return Err(std::io::Error::other("reset")),
        None => (
            201,
            format!(r#"{{"sid":"SM{n:032}","status":"queued","num_segments":"1"}}"#),
            None,
        ),
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if let Some(ra) = retry_after {
        resp.headers_mut()
            .insert("retry-after", ra.to_string().parse().unwrap());
    }
    Ok(resp)
}

pub fn twilio_error(code: u32, status: u16) -> Canned {
    Canned::Json(
        status,
        format!(
            r#"{{"code":{code},"message":"error {code} for +15557654321","more_info":"https://www.twilio.com/docs/errors/{code}","status":{status}}}"#
        ),
        None,
    )
}

// ---- the gateway process ------------------------------------------------------------

pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("smsgate-test")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// The store in the state dir (with the daemon stopped: sled lets one process in).
    pub fn store(&self) -> smsgate::store::Store {
        smsgate::store::Store::open(&self.state()).unwrap()
    }

    /// The ids of the texts waiting in the agent inbox, in its order.
    pub fn inbox_ids(&self) -> Vec<String> {
        self.store()
            .inbox()
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.id)
            .collect()
    }

    /// The agent socket in the state dir.
    pub fn agent_sock(&self) -> PathBuf {
        self.state().join("agent.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("smsgate.json5")
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        let p = self.config_path();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A single-account config with `sms_extra` spliced into channels.sms.
    pub fn config(&self, twilio: &FakeTwilio, sms_extra: &str) -> PathBuf {
        self.write_config(&format!(
            r#"{{
  gateway: {{ listen: "127.0.0.1:0", stateDir: "{state}" }},
  channels: {{ sms: {{
    accountSid: "{SID}", authToken: "{TOKEN}", fromNumber: "{FROM}",
    publicWebhookUrl: "{PUBLIC}", apiBaseUrl: "{api}",
    {sms_extra}
  }} }},
}}"#,
            state = self.state().display(),
            api = twilio.base_url(),
        ))
    }
}

/// The `channels.sms` extra that admits everyone straight to the agent (no pairing).
pub const OPEN: &str = r#"dmPolicy: "open", allowFrom: ["*"]"#;

/// What most tests begin with: a fresh state dir, the fake Twilio, the single-account
/// config ([`TestDir::config`] with `sms_extra`) and the gateway running on it, as
/// `let (t, twilio, config, gw) = gateway("")`. Keep `t` and `twilio` bound for as long
/// as the gateway runs (the state dir and Twilio go with them).
pub fn gateway(sms_extra: &str) -> (TestDir, FakeTwilio, PathBuf, Gateway) {
    gateway_with(sms_extra, &[])
}

/// [`gateway`] with the daemon started with `env` set (see [`Gateway::start_with`]).
pub fn gateway_with(
    sms_extra: &str,
    env: &[(&str, &str)],
) -> (TestDir, FakeTwilio, PathBuf, Gateway) {
    let (t, twilio, config) = configured(sms_extra);
    let gw = Gateway::start_with(&config, env);
    (t, twilio, config, gw)
}

/// [`gateway`] before the start: the directory, the fake Twilio and the written config,
/// for a test that changes the config or the state dir first, or starts the daemon its
/// own way.
pub fn configured(sms_extra: &str) -> (TestDir, FakeTwilio, PathBuf) {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = t.config(&twilio, sms_extra);
    (t, twilio, config)
}

pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Gateway {
    pub fn start(config: &Path) -> Self {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(config, env, &[])
    }

    /// Starts the gateway under a wrapper command (e.g. `prlimit … --`).
    pub fn start_wrapped(config: &Path, wrapper: &[&str]) -> Self {
        Self::spawn(config, &[], wrapper)
    }

    fn spawn(config: &Path, env: &[(&str, &str)], wrapper: &[&str]) -> Self {
        let mut cmd = match wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.arg("gateway")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.env_remove("RUST_LOG")
            .env_remove("SMSGATE_LOG")
            .env("SMSGATE_TWILIO_TIMEOUT_MS", "3000");
        set_env(&mut cmd, CHANNEL_ENV, env);
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("smsgate ready") {
                    if let Some(addr) = line
                        .split("listen=")
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next())
                    {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                        }
                    }
                }
                l.lock().unwrap().push_str(&line);
                l.lock().unwrap().push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "gateway did not become ready; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Self { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Waits up to `timeout` for `needle` in the log; fails the test with the log when
    /// it does not come.
    pub fn assert_log_soon(&self, needle: &str, timeout: Duration) {
        assert!(self.wait_log(needle, timeout), "{}", self.log());
    }

    /// Fails the test, with the log, unless the log already holds `needle`.
    pub fn assert_log_has(&self, needle: &str) {
        assert!(self.log().contains(needle), "{}", self.log());
    }

    /// The metrics listener's address (`metricsListen`), from its log line.
    pub fn metrics_addr(&self) -> String {
        assert!(
            self.wait_log("metrics on http://", Duration::from_secs(10)),
            "{}",
            self.log()
        );
        self.log()
            .split("metrics on http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .unwrap()
            .to_string()
    }

    /// One scrape of `/metrics` on the metrics listener.
    pub async fn scrape(&self) -> String {
        get_text(&client(), format!("http://{}/metrics", self.metrics_addr())).await
    }

    /// Stops the gateway (exit 0) and returns its whole log, read to the `stopped` line
    /// so no line written before the exit is still in the pipe.
    pub fn stop_and_log(self) -> String {
        let log = self.log.clone();
        assert_eq!(self.stop().code(), Some(0));
        assert!(
            wait_until(Duration::from_secs(10), || log
                .lock()
                .unwrap()
                .lines()
                .any(|l| l.trim_end().ends_with(" stopped"))),
            "{}",
            log.lock().unwrap()
        );
        let text = log.lock().unwrap().clone();
        text
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        unsafe_kill(pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not stop within 15 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }

    /// Posts a signed inbound SMS (`inbound(sid, from, body)`) to the default path.
    pub async fn admit(&self, sid: &str, from: &str, body: &str) -> u16 {
        post_signed(self, "/webhooks/sms", &inbound(sid, from, body))
            .await
            .0
    }

    /// The admin socket's `status`: queue depths, agents, store health.
    pub fn status(&self, config: &Path) -> serde_json::Value {
        let out = cli(config, &["channels", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["daemon"].clone()
    }

    /// The quiescence barrier: waits until nothing is waiting for an agent, in flight
    /// or queued to send (from the daemon's own counts), instead of sleeping and
    /// hoping nothing else happens.
    pub fn wait_quiet(&self, config: &Path, timeout: Duration) -> bool {
        wait_until(timeout, || self.status(config)["quiet"] == true)
    }

    /// `GET path` on the webhook listener: the status code.
    pub async fn get_status(&self, path: &str) -> u16 {
        client()
            .get(self.url(path))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: i32, sig: &str) {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}

// ---- a test agent on the agent socket -------------------------------------------------

pub struct TestAgent {
    reader: BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl TestAgent {
    pub fn connect(socket: &Path) -> Self {
        let mut last = None;
        for _ in 0..100 {
            match std::os::unix::net::UnixStream::connect(socket) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    return Self {
                        writer: s.try_clone().unwrap(),
                        reader: BufReader::new(s),
                    };
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("cannot connect to {}: {last:?}", socket.display());
    }

    pub fn send(&mut self, v: serde_json::Value) {
        self.send_raw(&v.to_string());
    }

    /// Writes without a newline (half a line).
    pub fn send_raw_partial(&mut self, text: &str) {
        use std::io::Write;
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    pub fn send_raw(&mut self, line: &str) {
        use std::io::Write;
        self.writer.write_all(line.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
    }

    /// The next line, or None after `timeout`.
    pub fn next_within(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .unwrap();
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap()),
            Err(_) => None,
        }
    }

    /// "Nothing more comes": first the daemon's quiescence barrier (nothing waits for an
    /// agent, is in flight or queued to send, see [`Gateway::wait_quiet`]), so that any
    /// line still to come would already be on the socket; then the socket is read
    /// without waiting for more than a moment. Not a sleep that hopes.
    pub fn assert_no_more(&mut self, gw: &Gateway, config: &Path, what: &str) {
        assert!(
            gw.wait_quiet(config, Duration::from_secs(10)),
            "the daemon did not become quiet: {}",
            gw.log()
        );
        let more = self.next_within(Duration::from_millis(100));
        assert!(more.is_none(), "{what}: got {more:?}");
    }

    pub fn next(&mut self) -> serde_json::Value {
        self.next_within(Duration::from_secs(10))
            .expect("no line from the gateway within 10 s")
    }

    /// The next line of the given type, skipping others (e.g. status lines).
    pub fn next_of(&mut self, ty: &str) -> serde_json::Value {
        loop {
            let v = self.next();
            if v["type"] == ty {
                return v;
            }
        }
    }
}

// ---- helpers --------------------------------------------------------------------------

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// GETs `url` with `c` and returns the body (panics on any transport error).
pub async fn get_text(c: &reqwest::Client, url: String) -> String {
    c.get(url).send().await.unwrap().text().await.unwrap()
}

/// Admits `(sid, from, body)` (asserting the 200), then waits for `n` sends and returns
/// them (e.g. the pairing reply to a stranger).
pub async fn admit_and_wait_sends(
    gw: &Gateway,
    twilio: &FakeTwilio,
    (sid, from, body): (&str, &str, &str),
    n: usize,
    timeout: Duration,
) -> Vec<Recorded> {
    assert_eq!(gw.admit(sid, from, body).await, 200);
    twilio.wait_sends(n, timeout)
}

/// Posts a ready-made body with the given headers to `url`; returns the status.
/// Owned arguments, so it can run inside `tokio::spawn`.
pub async fn post_raw(url: String, headers: Vec<(&'static str, String)>, body: String) -> u16 {
    let mut req = client().post(url).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Posts a webhook signed for `PUBLIC` with `TOKEN`; returns status and body.
pub async fn post_signed(gw: &Gateway, path: &str, params: &[(&str, &str)]) -> (u16, String) {
    let sig = sign(TOKEN, PUBLIC, params);
    post(gw, path, params, Some(&sig)).await
}

/// Posts a webhook signed with `token` for `signed_url`; returns the status.
pub async fn post_signed_by(
    gw: &Gateway,
    path: &str,
    params: &[(&str, &str)],
    token: &str,
    signed_url: &str,
) -> u16 {
    post(gw, path, params, Some(&sign(token, signed_url, params)))
        .await
        .0
}

pub async fn post(
    gw: &Gateway,
    path: &str,
    params: &[(&str, &str)],
    sig: Option<&str>,
) -> (u16, String) {
    let mut req = client()
        .post(gw.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(params));
    if let Some(sig) = sig {
        req = req.header("X-Twilio-Signature", sig);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// `queue list --json` as entries (asserts the CLI succeeds).
pub fn queue_list(config: &Path) -> Vec<serde_json::Value> {
    let out = cli(config, &["queue", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A gateway serving HTTPS with a self-signed certificate for `localhost`.
pub fn tls_config(t: &TestDir, twilio: &FakeTwilio) -> (PathBuf, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(t.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(t.path().join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let config = t.write_config(&format!(
        r#"{{
  gateway: {{ listen: "127.0.0.1:0", stateDir: "{state}", tls: {{ certFile: "{dir}/cert.pem", keyFile: "{dir}/key.pem" }} }},
  channels: {{ sms: {{ accountSid: "{SID}", authToken: "{TOKEN}", fromNumber: "{FROM}", publicWebhookUrl: "{PUBLIC}",
    apiBaseUrl: "{api}", dmPolicy: "open", allowFrom: ["*"] }} }},
}}"#,
        state = t.state().display(),
        dir = t.path().display(),
        api = twilio.base_url()
    ));
    (config, cert.cert.pem())
}

/// The fallback URL `setup_with_fallback` gives `channels setup`.
pub const FALLBACK_URL: &str = "https://backup.example.test/sms";

/// `channels setup --fallback-url FALLBACK_URL --retries <retries>`.
pub fn setup_with_fallback(config: &Path, retries: &str) -> Output {
    let args = ["channels", "setup", "--fallback-url", FALLBACK_URL];
    cli(config, &[&args[..], &["--retries", retries]].concat())
}

/// The environment variables that configure the SMS channel; tests clear them so the
/// developer's own do not leak in.
pub const CHANNEL_ENV: &[&str] = &[
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_PHONE_NUMBER",
    "TWILIO_SMS_FROM",
    "SMS_PUBLIC_WEBHOOK_URL",
    "SMS_ALLOWED_USERS",
];

/// Removes each of `remove` from `cmd`'s environment, then sets `env`.
pub fn set_env(cmd: &mut Command, remove: &[&str], env: &[(&str, &str)]) {
    for k in remove {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
}

/// Runs the CLI with `--config`.
pub fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The pairing code in the text of an SMS.
pub fn code_in(body: &str) -> String {
    body.split("code is ")
        .nth(1)
        .unwrap()
        .chars()
        .take(8)
        .collect()
}
