//! The Twilio REST client. [`MessagesApi`] is the seam tests stand in for; the real
//! implementation is reqwest over rustls.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::error::{api_error, ApiError, RestError, SendError};
use super::listing::{parse_page, Listed};
use crate::config::{Account, Sender};
use crate::phone::{redact_numbers_in, E164};
use crate::secret::{scrub, Secret};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What authenticates against one Twilio account.
#[derive(Debug, Clone)]
pub struct Creds {
    pub api_base_url: Url,
    pub messaging_api_base_url: Url,
    pub account_sid: String,
    pub auth_token: Secret,
}

impl Creds {
    pub fn of(account: &Account) -> Self {
        Self {
            api_base_url: account.api_base_url.clone(),
            messaging_api_base_url: account.messaging_api_base_url.clone(),
            account_sid: account.account_sid.clone(),
            auth_token: account.auth_token.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SendRequest {
    pub creds: Creds,
    pub to: E164,
    pub sender: Sender,
    pub body: String,
    pub media_urls: Vec<String>,
    pub status_callback: Option<String>,
    /// A WhatsApp template (CONTRACT §12): `ContentSid` and `ContentVariables` are
    /// sent instead of `Body` and `MediaUrl`.
    pub content: Option<Content>,
}

/// A WhatsApp template and its variables (a JSON object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub sid: String,
    pub variables: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// `None` when Twilio answered 2xx with a body we could not read: the message was
    /// accepted, so it must not be retried.
    pub sid: Option<String>,
    pub segments: Option<u32>,
    pub status: Option<String>,
}

/// The Twilio operations smsgate uses.
pub trait MessagesApi: Send + Sync {
    fn send<'a>(&'a self, req: &'a SendRequest) -> BoxFuture<'a, Result<Sent, SendError>>;

    /// Our messages to `req.to` since `attempt_ms` (on our wall clock), and how far
    /// Twilio's clock is from ours, for resolving a send whose outcome is unknown (see
    /// [`super::reconcile`]).
    fn look_up<'a>(
        &'a self,
        req: &'a SendRequest,
        attempt_ms: u64,
    ) -> BoxFuture<'a, Result<Lookup, RestError>>;

    /// The messages of [`MessagesApi::look_up`] alone.
    fn list_sent<'a>(
        &'a self,
        req: &'a SendRequest,
        attempt_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Listed>, RestError>> {
        Box::pin(async move { self.look_up(req, attempt_ms).await.map(|l| l.messages) })
    }
}

/// What a lookup read from Twilio.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    pub messages: Vec<Listed>,
    /// How far Twilio's clock is ahead of ours (negative: behind), from the `Date`
    /// header of its answer; `None` when it had none we could read.
    pub twilio_minus_ours_ms: Option<i64>,
    /// Whether the list was read to its end (not cut at the page cap, or at a next
    /// page we do not follow).
    pub complete: bool,
}

/// How many pages of 50 a lookup reads at most (a recipient we text hundreds of times
/// a day is not a person chatting with an agent).
const LOOKUP_MAX_PAGES: usize = 5;

/// The real client.
#[derive(Clone)]
pub struct HttpTwilio {
    http: reqwest::Client,
}

impl HttpTwilio {
    pub fn new() -> Result<Self, String> {
        let http = reqwest::Client::builder()
            // Every call carries the account's credentials and most a person's text:
            // a 3xx is answered as an error (see [`redirect_error`]), never followed
            // to whatever host `Location` names.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(request_timeout())
            .user_agent(concat!("smsgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self { http })
    }
}

/// The host (and port, when not the scheme's default) a redirect's `Location` points
/// at, resolved against the URL that answered; `"(no Location)"` or `"(unreadable
/// Location)"` when there is none to name. Only the host: the rest of the URL may
/// carry whatever the redirecting server put in it.
pub(crate) fn redirect_target(location: Option<&str>, from: &Url) -> String {
    let Some(loc) = location else {
        return "(no Location)".into();
    };
    match from.join(loc.trim()) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => "(no host in Location)".into(),
        },
        Err(_) => "(unreadable Location)".into(),
    }
}

/// The error for a 3xx from `from`: redirects are not followed, on any call that
/// carries a credential or a person's text (issue 20 item 2).
pub(crate) fn redirect_error(status: u16, location: Option<&str>, from: &Url) -> ApiError {
    ApiError {
        http_status: status,
        code: None,
        message: format!(
            "a redirect to {}, not followed (smsgate follows no redirects with credentials or a text; check apiBaseUrl/messagingApiBaseUrl, or what stands in front of Twilio)",
            redirect_target(location, from)
        ),
        more_info: None,
    }
}

/// The 3xx `resp` is, as an error, if it is one.
fn redirected(resp: &reqwest::Response) -> Option<ApiError> {
    let status = resp.status();
    status.is_redirection().then(|| {
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok());
        redirect_error(status.as_u16(), location, resp.url())
    })
}

/// How long a Twilio request may take in all. `SMSGATE_TWILIO_TIMEOUT_MS` shortens it
/// (tests; operators on slow links may lengthen it).
fn request_timeout() -> Duration {
    crate::clock::env_span("SMSGATE_TWILIO_TIMEOUT_MS")
        .map_or(Duration::from_secs(30), Duration::from_millis)
}

#[derive(Deserialize)]
struct CreatedJson {
    sid: Option<String>,
    num_segments: Option<serde_json::Value>,
    status: Option<String>,
}

/// Twilio's `Retry-After` (seconds or an HTTP date; see [`crate::backoff::parse_retry_after`]),
/// at most an hour.
fn parse_retry_after(v: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let wait = crate::backoff::parse_retry_after(v?.to_str().ok()?, std::time::SystemTime::now())?;
    Some(wait.min(Duration::from_secs(3600)))
}

/// The form fields of a create-message request, in the order Twilio documents them.
pub fn create_form(req: &SendRequest) -> Vec<(&'static str, String)> {
    let mut form = vec![("To", req.to.to_string())];
    match &req.sender {
        Sender::Number(n) => form.push(("From", n.to_string())),
        Sender::MessagingService(sid) => form.push(("MessagingServiceSid", sid.clone())),
    }
    match &req.content {
        // Since 2025-04-01 a template in `Body` fails: no Body, no MediaUrl.
        Some(c) => {
            form.push(("ContentSid", c.sid.clone()));
            if let Some(v) = &c.variables {
                form.push(("ContentVariables", v.clone()));
            }
        }
        None => {
            form.push(("Body", req.body.clone()));
            for m in &req.media_urls {
                form.push(("MediaUrl", m.clone()));
            }
        }
    }
    if let Some(cb) = &req.status_callback {
        form.push(("StatusCallback", cb.clone()));
    }
    form
}

pub(crate) fn messages_url(creds: &Creds) -> String {
    format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        creds.api_base_url.as_str().trim_end_matches('/'),
        creds.account_sid
    )
}

impl MessagesApi for HttpTwilio {
    fn look_up<'a>(
        &'a self,
        req: &'a SendRequest,
        attempt_ms: u64,
    ) -> BoxFuture<'a, Result<Lookup, RestError>> {
        Box::pin(async move {
            // The `DateSent>=` day is on Twilio's clock, which we learn from its first
            // answer: when that moves the day earlier (ours is ahead of Twilio's), ask
            // again from the earlier day, or the message would be invisible.
            let mut asked_from = super::reconcile::date_sent_from(attempt_ms);
            for _ in 0..2 {
                let (messages, skew, complete) =
                    self.list_pages(req, &asked_from, attempt_ms).await?;
                let (_, since) =
                    super::reconcile::attempt_on_twilio_clock(attempt_ms, 0, None, skew);
                let from = super::reconcile::date_sent_from(since);
                if from >= asked_from {
                    return Ok(Lookup {
                        messages,
                        twilio_minus_ours_ms: skew,
                        complete,
                    });
                }
                asked_from = from;
            }
            Err(RestError::Unavailable(
                "Twilio's clock moved by more than a day between two lookups".into(),
            ))
        })
    }

    fn send<'a>(&'a self, req: &'a SendRequest) -> BoxFuture<'a, Result<Sent, SendError>> {
        Box::pin(async move {
            let secrets = [&req.creds.auth_token];
            let clean = |s: String| redact_numbers_in(&scrub(&s, &secrets));
            let resp = self
                .http
                .post(messages_url(&req.creds))
                .basic_auth(&req.creds.account_sid, Some(req.creds.auth_token.expose()))
                .form(&create_form(req))
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                // A refused or failed connection never reached Twilio: safe to retry.
                Err(e) if e.is_connect() => {
                    return Err(SendError::Retryable {
                        detail: clean(format!(
                            "cannot connect to Twilio: {}",
                            crate::logging::error_chain(&e)
                        )),
                        retry_after: None,
                    })
                }
                Err(e) if e.is_builder() => {
                    return Err(SendError::Rejected(ApiError {
                        http_status: 0,
                        code: None,
                        message: clean(format!("invalid request: {e}")),
                        more_info: None,
                    }))
                }
                // Timeouts and resets after the request was written: Twilio may have
                // sent the message, so this must not be retried.
                Err(e) => {
                    return Err(SendError::Unknown(clean(format!(
                        "no answer from Twilio: {}",
                        crate::logging::error_chain(&e)
                    ))))
                }
            };
            // Refused, not retried: the configured host sends us elsewhere, and asking
            // again gets the same answer. Nothing was sent (the request went only to
            // the configured host, which did not create a message).
            if let Some(err) = redirected(&resp) {
                return Err(SendError::Rejected(err));
            }
            let status = resp.status();
            let retry_after = parse_retry_after(resp.headers().get(reqwest::header::RETRY_AFTER));
            let body = match resp.text().await {
                Ok(b) => b,
                Err(e) if status.is_success() => {
                    tracing::warn!(
                        "Twilio accepted a message but its answer could not be read: {}",
                        clean(e.to_string())
                    );
                    return Ok(Sent {
                        sid: None,
                        segments: None,
                        status: None,
                    });
                }
                Err(e) => {
                    return Err(SendError::Unknown(clean(format!(
                        "Twilio's answer was cut off: {}",
                        crate::logging::error_chain(&e)
                    ))))
                }
            };
            if status.is_success() {
                return Ok(match serde_json::from_str::<CreatedJson>(&body) {
                    Ok(c) => Sent {
                        sid: c.sid,
                        segments: c.num_segments.and_then(|v| match v {
                            serde_json::Value::String(s) => s.parse().ok(),
                            serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
                            _ => None,
                        }),
                        status: c.status,
                    },
                    Err(_) => {
                        tracing::warn!(
                            "Twilio accepted a message but its answer was not the expected JSON"
                        );
                        Sent {
                            sid: None,
                            segments: None,
                            status: None,
                        }
                    }
                });
            }
            let err = api_error(status.as_u16(), &body, &secrets);
            if status.as_u16() == 429 || status.is_server_error() || err.code == Some(20429) {
                Err(SendError::Retryable {
                    detail: err.to_string(),
                    retry_after,
                })
            } else {
                Err(SendError::Rejected(err))
            }
        })
    }
}

/// The query of a lookup: `To`, our `From` (a Messaging Service picks the number
/// itself, so it is left out and the match checks the service), `DateSent>=` (the day,
/// from [`super::reconcile::date_sent_from`]).
pub(crate) fn lookup_query(req: &SendRequest, date_sent_from: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("To", req.to.as_str());
    if let Sender::Number(n) = &req.sender {
        q.append_pair("From", n.as_str());
    }
    q.append_pair("DateSent>", date_sent_from);
    q.append_pair("PageSize", "50");
    q.finish()
}

/// The largest answer a probe, setup or lookup call reads: a page of 50 messages of
/// 1,600 characters is about 200 KiB.
const MAX_REST_BODY: usize = 4 * 1024 * 1024;

/// How long one probe or setup call may take.
const REST_TIMEOUT: Duration = Duration::from_secs(10);

impl HttpTwilio {
    /// The pages of a lookup listing (at most [`LOOKUP_MAX_PAGES`]), how far Twilio's
    /// clock is ahead of ours by its first answer, and whether the list was read to
    /// its end. Stops at the first page that reaches back past the attempt
    /// (`attempt_ms`, ours; placed on Twilio's clock by the first answer): Twilio lists
    /// newest first, so the rest is older still.
    async fn list_pages(
        &self,
        req: &SendRequest,
        date_sent_from: &str,
        attempt_ms: u64,
    ) -> Result<(Vec<Listed>, Option<i64>, bool), RestError> {
        let mut url = format!(
            "{}?{}",
            messages_url(&req.creds),
            lookup_query(req, date_sent_from)
        );
        let mut out = Vec::new();
        let mut skew = None;
        let mut complete = false;
        for page_no in 0..LOOKUP_MAX_PAGES {
            let (page, page_skew) = self.get_json_dated(&req.creds, &url).await?;
            if page_no == 0 {
                skew = page_skew;
            }
            let (mut list, next) = parse_page(&page).map_err(RestError::Unavailable)?;
            let (_, theirs) = super::reconcile::attempt_on_twilio_clock(attempt_ms, 0, None, skew);
            let older_reached = super::reconcile::reaches_before(&list, theirs);
            out.append(&mut list);
            if older_reached {
                // Not `complete`, but proven enough: see `no_match_proves_absence`.
                break;
            }
            match next {
                // Twilio gives the next page as a path on the same API host.
                Some(path) if path.starts_with('/') => {
                    url = format!(
                        "{}{path}",
                        req.creds.api_base_url.as_str().trim_end_matches('/')
                    );
                }
                // Not a path on the API host: not followed (the credentials go only
                // to the configured host), so the list is incomplete.
                Some(_) => break,
                None => {
                    complete = true;
                    break;
                }
            }
        }
        Ok((out, skew, complete))
    }

    /// GET a Twilio JSON resource.
    pub async fn get_json(&self, creds: &Creds, url: &str) -> Result<serde_json::Value, RestError> {
        self.get_json_dated(creds, url).await.map(|(v, _)| v)
    }

    /// GET a Twilio JSON resource, and how far Twilio's clock is ahead of ours.
    async fn get_json_dated(
        &self,
        creds: &Creds,
        url: &str,
    ) -> Result<(serde_json::Value, Option<i64>), RestError> {
        let req = self
            .http
            .get(url)
            .basic_auth(&creds.account_sid, Some(creds.auth_token.expose()))
            .timeout(REST_TIMEOUT);
        Self::json(req, creds).await
    }

    /// POST a form to a Twilio resource (updates).
    pub async fn post_form(
        &self,
        creds: &Creds,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<serde_json::Value, RestError> {
        let req = self
            .http
            .post(url)
            .basic_auth(&creds.account_sid, Some(creds.auth_token.expose()))
            .form(form)
            .timeout(REST_TIMEOUT);
        Self::json(req, creds).await.map(|(v, _)| v)
    }

    async fn json(
        req: reqwest::RequestBuilder,
        creds: &Creds,
    ) -> Result<(serde_json::Value, Option<i64>), RestError> {
        let secrets = [&creds.auth_token];
        let clean = |s: String| redact_numbers_in(&scrub(&s, &secrets));
        let resp = req
            .send()
            .await
            .map_err(|e| RestError::Unavailable(clean(e.to_string())))?;
        if let Some(err) = redirected(&resp) {
            return Err(RestError::Api(err));
        }
        let status = resp.status();
        let skew = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
            .map(|theirs| theirs as i64 - crate::clock::now_ms() as i64);
        // Read with a cap: whatever answers in Twilio's place (a proxy, a captive
        // portal) must not make the daemon hold an unbounded body in memory.
        let mut resp = resp;
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| RestError::Unavailable(clean(e.to_string())))?
        {
            if bytes.len() + chunk.len() > MAX_REST_BODY {
                return Err(RestError::Unavailable(format!(
                    "Twilio's answer (HTTP {}) is larger than {} KiB; not read",
                    status.as_u16(),
                    MAX_REST_BODY / 1024
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = String::from_utf8_lossy(&bytes);
        if !status.is_success() {
            let err = api_error(status.as_u16(), &body, &secrets);
            return Err(if status.is_server_error() {
                RestError::Unavailable(err.to_string())
            } else {
                RestError::Api(err)
            });
        }
        serde_json::from_str(&body)
            .map(|v| (v, skew))
            .map_err(|e| RestError::Unavailable(format!("Twilio's answer is not JSON: {e}")))
    }
}

/// An HTTP `Date` header (IMF-fixdate, `Tue, 01 Dec 2026 15:53:57 GMT`, what Twilio and
/// every current server send; `httpdate` also reads the two obsolete forms RFC 9110
/// asks recipients to accept) in milliseconds since the epoch.
pub(crate) fn parse_http_date(s: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets() {
        let from = Url::parse("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json")
            .expect("url");
        let cases = [
            (Some("https://evil.example/x?To=+1555"), "evil.example"),
            (Some("http://127.0.0.1:8080/steal"), "127.0.0.1:8080"),
            (Some("/elsewhere"), "api.twilio.com"),
            (Some("  https://evil.example:443/ "), "evil.example"),
            (None, "(no Location)"),
            (Some("http://[::1"), "(unreadable Location)"),
        ];
        for (loc, want) in cases {
            assert_eq!(redirect_target(loc, &from), want, "{loc:?}");
        }
        let e = redirect_error(307, Some("http://127.0.0.1:9/x"), &from);
        assert_eq!(e.http_status, 307);
        let text = e.to_string();
        assert!(
            text.contains("307") && text.contains("127.0.0.1:9") && text.contains("not followed"),
            "{text}"
        );
        assert!(!text.contains("/x"), "only the host: {text}");
    }

    /// The hand-written parser `httpdate` replaced (issue 21 item 7), kept as the
    /// reference its results are checked against.
    fn reference(s: &str) -> Option<u64> {
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let t = time::PrimitiveDateTime::parse(s.trim(), &format)
            .ok()?
            .assume_utc();
        u64::try_from(t.unix_timestamp()).ok().map(|s| s * 1000)
    }

    proptest::proptest! {
        /// Any IMF-fixdate from 1970 to 9999: the same instant as before.
        #[test]
        fn http_dates_as_before(secs in 0u64..253_402_300_800) {
            let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            let s = httpdate::fmt_http_date(t);
            proptest::prop_assert_eq!(parse_http_date(&s), Some(secs * 1000));
            proptest::prop_assert_eq!(parse_http_date(&s), reference(&s));
        }

        /// Dates put together from parts in and out of range (day 0 or 31 February,
        /// hour 24, second 60, before 1970, a wrong weekday): read exactly when the old
        /// parser read them, to the same instant; except that a weekday the date does
        /// not fall on (which the old parser let through) is now refused.
        #[test]
        fn http_date_parts_as_before(
            wd in 0usize..8, day in 0u32..33, mon in 0usize..13, year in 1960u32..10_000,
            hour in 0u32..26, min in 0u32..61, sec in 0u32..62,
        ) {
            const WD: [&str; 8] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Xyz"];
            const MON: [&str; 13] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                "Dec", "Foo",
            ];
            let s = format!(
                "{}, {day:02} {} {year:04} {hour:02}:{min:02}:{sec:02} GMT",
                WD[wd], MON[mon]
            );
            let weekday = |ms: &u64| {
                time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
                    .map(|t| t.weekday().to_string()[..3].to_string())
                    .ok()
            };
            let want = reference(&s).filter(|ms| weekday(ms).as_deref() == Some(WD[wd]));
            proptest::prop_assert_eq!(parse_http_date(&s), want, "{}", s);
        }
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Tue, 01 Dec 2026 12:00:00 GMT"),
            Some(1_796_126_400_000)
        );
        assert_eq!(parse_http_date("Tue, 01 Dec 2026 12:00:00 +0000"), None);
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(
            parse_http_date("Mon, 01 Dec 2026 12:00:00 GMT"),
            None,
            "a Tuesday"
        );
        assert_eq!(
            parse_http_date("  Tue, 01 Dec 2026 12:00:00 GMT \r\n"),
            Some(1_796_126_400_000)
        );
        assert_eq!(parse_http_date(""), None);
    }
}
