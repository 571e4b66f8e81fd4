//! `channels capabilities | status | setup`: what the channel can do, whether each
//! account is set up right (checked against Twilio with `--probe`), and pointing the
//! Twilio number or Messaging Service at our webhook. The verdicts are pure functions
//! of what Twilio answered; the calls around them only fetch.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::{Account, Config, Sender};
use crate::twilio::RestError;
use crate::twilio::{signature, Creds, HttpTwilio};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    Ok,
    Mismatch,
    Missing,
    Error,
    Unavailable,
    Skipped,
}

impl Status {
    pub fn passes(self) -> bool {
        matches!(self, Status::Ok | Status::Skipped)
    }
}

/// One named check and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name,
            status,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }
}

pub fn capabilities() -> Value {
    json!({
        "channel": "sms",
        "capabilities": {
            "inbound": true,
            "outbound": true,
            "directMessages": true,
            "groups": false,
            "media": { "inbound": true, "outbound": true, "maxPerMessage": 10, "maxInboundBytesPerMessage": crate::agent::media::MAX_MEDIA_BYTES_PER_MESSAGE },
            "deliveryStatus": true,
            "markdown": "flattened to plain text",
            "chunking": { "defaultLimit": 1500, "maxLimit": 1600, "unit": "UTF-16 code units, as Twilio counts" },
            "segments": "GSM-7 160/153, UCS-2 70/67",
            "edits": false,
            "reactions": false,
            "threads": false,
            "dmPolicies": ["pairing", "allowlist", "open", "disabled"],
            "optOut": { "stop": ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"], "start": ["START", "YES", "UNSTOP"] },
            "senders": ["fromNumber", "messagingServiceSid"],
            "signatures": ["HMAC-SHA1 (auth token, previousAuthTokens)", "HMAC-SHA256 (webhookSigningKeys)"],
        }
    })
}

/// The configuration side of `channels status`, per account.
pub fn account_summary(config: &Config) -> Vec<Value> {
    let mut out: Vec<Value> = config
        .sms
        .accounts
        .iter()
        .map(|a| {
            let (from, service) = match &a.sender {
                Sender::Number(n) => (Some(n.to_string()), None),
                Sender::MessagingService(s) => (None, Some(s.clone())),
            };
            json!({
                "account": a.id,
                "configured": true,
                "fromNumber": from,
                "messagingServiceSid": service,
                "webhookPath": a.webhook_path,
                "publicWebhookUrl": a.public_url().map(|u| u.raw.clone()),
                "dmPolicy": a.dm_policy.as_str(),
                "signatureValidation": matches!(a.inbound, crate::config::InboundCheck::Signed { .. }),
                "default": config.sms.default_account.as_deref() == Some(a.id.as_str()),
            })
        })
        .collect();
    out.extend(config.sms.inactive.iter().map(|a| json!({"account": a.id, "configured": false, "missing": a.reason, "webhookPath": a.webhook_path})));
    out
}

fn strip_fragment(url: &str) -> &str {
    url.split_once('#').map_or(url, |(base, _)| base)
}

/// What `channels setup` asks for besides pointing the webhook at us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupOptions {
    /// The number's (or Messaging Service's) fallback URL, called by Twilio when the
    /// webhook fails.
    pub fallback_url: Option<String>,
    /// Twilio's connection override `#rc=N&rp=all`: retry the webhook up to N times on
    /// any failure. Twilio does not sign the fragment.
    pub retries: Option<u8>,
}

/// The most connection retries Twilio takes in `#rc=`.
pub const MAX_WEBHOOK_RETRIES: u8 = 5;

impl SetupOptions {
    /// Checks the options; the error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(n) = self.retries {
            if n > MAX_WEBHOOK_RETRIES {
                return Err(format!(
                    "--retries {n}: Twilio retries a webhook at most {MAX_WEBHOOK_RETRIES} times; use 0 to {MAX_WEBHOOK_RETRIES}"
                ));
            }
        }
        if let Some(u) = &self.fallback_url {
            let parsed = url::Url::parse(u).map_err(|e| {
                format!("--fallback-url {u:?} is not an absolute URL ({e}); give e.g. https://backup.example.com/sms")
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!(
                    "--fallback-url must be http(s), not {}:",
                    parsed.scheme()
                ));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err("--fallback-url must not carry credentials".into());
            }
        }
        Ok(())
    }

    /// The URL to set as the inbound webhook: `public` with the retry override as its
    /// fragment (replacing any fragment it had) when asked for.
    pub fn webhook_url(&self, public: &str) -> String {
        match self.retries {
            Some(n) => format!("{}#rc={n}&rp=all", strip_fragment(public)),
            None => public.to_string(),
        }
    }
}

/// The verdict on an inbound webhook URL and method as Twilio has them.
pub fn webhook_verdict(
    configured: &str,
    twilio_url: Option<&str>,
    twilio_method: Option<&str>,
    what: &str,
) -> Check {
    let url = twilio_url.unwrap_or_default().trim();
    let method = twilio_method
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase();
    let base = |status, detail: String| {
        Check::new("webhook", status, detail)
            .with("configuredUrl", json!(configured))
            .with("twilioUrl", json!(twilio_url))
            .with("twilioMethod", json!(twilio_method))
    };
    if url.is_empty() {
        return base(
            Status::Missing,
            format!("no inbound SMS URL is set on the {what}; run `smsgate channels setup`"),
        );
    }
    // Twilio signs the URL without its `#fragment` (connection overrides such as
    // `#rc=2&rp=all` that `channels setup --retries` writes), so compare without it.
    let (url_base, configured_base) = (strip_fragment(url), strip_fragment(configured));
    let same = url_base == configured_base
        || signature::url_variants(configured_base)
            .iter()
            .any(|v| v == url_base);
    match (same, method == "POST") {
        (true, true) => base(Status::Ok, format!("the {what} sends SMS to {url} (POST)")),
        (true, false) => base(Status::Mismatch, format!("the {what} uses {method} for {url}; smsgate needs POST")),
        (false, _) => base(Status::Mismatch, format!("the {what} sends SMS to {url} ({method}), but publicWebhookUrl is {configured}; they must match byte for byte")),
    }
}

/// How many of our own recent sends `--probe` reads back.
pub const RECENT_SENDS: usize = 20;

/// The verdict on the account's recent messages: inbound ones with error 11200 (Twilio
/// could not reach the webhook), and, when `sends` is given, delivery failures of our
/// own recent sends (status `failed`/`undelivered`), counted by error code so the
/// operator sees e.g. "4 of the last 20 replies failed with 30034" with its hint.
pub fn recent_errors_verdict(inbound: &Value, sends: Option<&Value>) -> Check {
    let list = |v: &Value| -> Vec<Value> {
        v.get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let code_of = |m: &Value| {
        m.get("error_code")
            .and_then(Value::as_u64)
            .map(|c| c as u32)
    };
    let unreachable = list(inbound)
        .iter()
        .filter(|m| code_of(m) == Some(11200))
        .count();
    let sent = sends.map(list).unwrap_or_default();
    let sent: Vec<&Value> = sent
        .iter()
        .filter(|m| {
            // We asked for messages from our sender; an inbound one in the answer
            // (a Messaging Service listing) is not ours.
            m.get("direction")
                .and_then(Value::as_str)
                .is_none_or(|d| d.starts_with("outbound"))
        })
        .take(RECENT_SENDS)
        .collect();
    let mut by_code: Vec<(u32, usize)> = Vec::new();
    for m in &sent {
        let failed = matches!(
            m.get("status").and_then(Value::as_str),
            Some("failed" | "undelivered")
        );
        if let (true, Some(code)) = (failed, code_of(m)) {
            match by_code.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                None => by_code.push((code, 1)),
            }
        }
    }
    // Most frequent first; equal counts by code, so the output is stable.
    by_code.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut details = Vec::new();
    let mut failures = Vec::new();
    if unreachable > 0 {
        details.push(format!(
            "{unreachable} recent inbound message(s) failed with Twilio error 11200: Twilio could not get a 200 from the webhook"
        ));
        failures.push(json!({"code": 11200, "count": unreachable, "direction": "inbound", "hint": crate::twilio::hints::sentence(Some(11200))}));
    }
    for (code, n) in &by_code {
        let hint = crate::twilio::hints::sentence(Some(*code));
        details.push(match &hint {
            Some(h) => format!(
                "{n} of the last {} replies failed with {code}: {h}",
                sent.len()
            ),
            None => format!("{n} of the last {} replies failed with {code}", sent.len()),
        });
        failures.push(json!({"code": code, "count": n, "direction": "outbound", "hint": hint}));
    }
    if failures.is_empty() {
        let what = if sends.is_some() {
            "no recent inbound message has error 11200 and no recent reply failed"
        } else {
            "no recent inbound message has error 11200"
        };
        return Check::new("recentErrors", Status::Ok, what);
    }
    let first = failures[0].clone();
    Check::new("recentErrors", Status::Error, details.join("; "))
        .with("code", first["code"].clone())
        .with("hint", first["hint"].clone())
        .with("failures", Value::Array(failures))
}

/// Advice for the operator, from the account and the verdicts.
pub fn hints(config: &Config, account: &Account, checks: &[Check]) -> Vec<String> {
    let mut out = Vec::new();
    let failed = |name: &str| checks.iter().any(|c| c.name == name && !c.status.passes());
    if let Some(url) = account.public_url() {
        if url
            .parsed
            .host_str()
            .is_some_and(|h| h.ends_with(".ts.net"))
        {
            let path = url.parsed.path();
            let port = config.gateway.listen.port();
            out.push(format!("Tailscale Funnel: tailscale funnel --bg --set-path {path} http://127.0.0.1:{port}{path}"));
        }
    }
    if failed("credentials") {
        out.push("Check accountSid and authToken against the Twilio Console (Account → API keys & tokens); the token may have been rotated (previousAuthTokens keeps old ones valid for webhooks).".into());
    }
    if failed("webhook") {
        out.push("Twilio signs the exact URL it calls, so its inbound URL must equal publicWebhookUrl byte for byte (scheme, host, path, trailing slash) with method POST; `smsgate channels setup` sets it.".into());
    }
    for c in checks.iter().filter(|c| c.name == "recentErrors") {
        let failures = c.extra.get("failures").and_then(Value::as_array);
        for f in failures.into_iter().flatten() {
            let code = f["code"].as_u64().unwrap_or_default();
            if let Some(h) = f["hint"].as_str() {
                out.push(format!("Error {code}: {h}."));
            }
        }
    }
    out
}

fn api_base(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

fn rest_failure(name: &'static str, e: &RestError) -> Check {
    match e {
        RestError::Unavailable(m) => Check::new(name, Status::Unavailable, m.clone()),
        RestError::Api(a) => {
            let c = Check::new(name, Status::Error, a.to_string());
            match a.code {
                Some(code) => c.with("code", json!(code)),
                None => c,
            }
        }
    }
}

/// All checks for one usable account.
pub async fn probe(http: &HttpTwilio, account: &Account) -> Vec<Check> {
    let creds = Creds::of(account);
    let api = api_base(&account.api_base_url);
    let sid = &account.account_sid;
    let credentials = match http
        .get_json(&creds, &format!("{api}/2010-04-01/Accounts/{sid}.json"))
        .await
    {
        Ok(v) => {
            let status = v.get("status").and_then(Value::as_str).unwrap_or("unknown");
            let name = v
                .get("friendly_name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            if status == "active" {
                Check::new(
                    "credentials",
                    Status::Ok,
                    format!("account {name:?} is active"),
                )
            } else {
                Check::new(
                    "credentials",
                    Status::Error,
                    format!("account {name:?} is {status}"),
                )
            }
        }
        Err(RestError::Api(a)) if a.http_status == 401 || a.code == Some(20003) => Check::new(
            "credentials",
            Status::Error,
            format!("Twilio rejected accountSid and authToken ({a})"),
        )
        .with("code", json!(a.code.unwrap_or(20003))),
        Err(e) => rest_failure("credentials", &e),
    };
    if credentials.status == Status::Error {
        return vec![
            credentials,
            Check::new("webhook", Status::Skipped, "needs working credentials"),
            Check::new("recentErrors", Status::Skipped, "needs working credentials"),
        ];
    }
    let Some(public) = account.public_url().map(|u| u.raw.clone()) else {
        return vec![
            credentials,
            Check::new("webhook", Status::Missing, "publicWebhookUrl is not set"),
            Check::new("recentErrors", Status::Skipped, "needs publicWebhookUrl"),
        ];
    };
    let (webhook, recent) = match &account.sender {
        Sender::Number(n) => {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("PhoneNumber", n.as_str())
                .finish();
            let webhook = match http
                .get_json(
                    &creds,
                    &format!("{api}/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json?{q}"),
                )
                .await
            {
                Ok(v) => match v
                    .get("incoming_phone_numbers")
                    .and_then(Value::as_array)
                    .and_then(|l| l.first())
                {
                    None => Check::new(
                        "webhook",
                        Status::Missing,
                        format!("{n} is not a number of this Twilio account"),
                    ),
                    Some(num) => {
                        let get =
                            |k: &str| num.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
                        match get("sms_application_sid") {
                            Some(app) => Check::new("webhook", Status::Mismatch, format!("a TwiML app ({app}) handles this number's SMS, so its URL is used instead of the number's")).with("configuredUrl", json!(public)),
                            None => webhook_verdict(&public, get("sms_url"), get("sms_method"), "number"),
                        }
                    }
                },
                Err(e) => rest_failure("webhook", &e),
            };
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("To", n.as_str())
                .append_pair("PageSize", "3")
                .finish();
            let messages = format!("{api}/2010-04-01/Accounts/{sid}/Messages.json");
            let inbound = http.get_json(&creds, &format!("{messages}?{q}")).await;
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("From", n.as_str())
                .append_pair("PageSize", &RECENT_SENDS.to_string())
                .finish();
            let sends = http.get_json(&creds, &format!("{messages}?{q}")).await;
            let recent = match (inbound, sends) {
                (Ok(i), Ok(s)) => recent_errors_verdict(&i, Some(&s)),
                (Err(e), _) | (_, Err(e)) => rest_failure("recentErrors", &e),
            };
            (webhook, recent)
        }
        Sender::MessagingService(mg) => {
            let base = api_base(&account.messaging_api_base_url);
            let webhook = match http.get_json(&creds, &format!("{base}/v1/Services/{mg}")).await {
                Ok(v) if v.get("use_inbound_webhook_on_number").and_then(Value::as_bool) == Some(true) => {
                    Check::new("webhook", Status::Mismatch, "the Messaging Service lets each number's own SMS URL win (use_inbound_webhook_on_number is true); turn it off or point the numbers at publicWebhookUrl").with("configuredUrl", json!(public))
                }
                Ok(v) => webhook_verdict(&public, v.get("inbound_request_url").and_then(Value::as_str), v.get("inbound_method").and_then(Value::as_str), "Messaging Service"),
                Err(e) => rest_failure("webhook", &e),
            };
            // Twilio cannot list a service's messages by service: read the account's
            // latest and keep the ones this service sent.
            let q = format!("PageSize={}", RECENT_SENDS * 5);
            let recent = match http
                .get_json(
                    &creds,
                    &format!("{api}/2010-04-01/Accounts/{sid}/Messages.json?{q}"),
                )
                .await
            {
                Ok(mut v) => {
                    if let Some(list) = v.get_mut("messages").and_then(Value::as_array_mut) {
                        list.retain(|m| {
                            m.get("messaging_service_sid").and_then(Value::as_str)
                                == Some(mg.as_str())
                        });
                    }
                    recent_errors_verdict(&json!({}), Some(&v))
                }
                Err(e) => rest_failure("recentErrors", &e),
            };
            (webhook, recent)
        }
    };
    vec![credentials, webhook, recent]
}

/// What `channels setup` would change, and the call that changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupPlan {
    pub what: String,
    pub url: String,
    pub fields: Vec<(&'static str, String, String)>,
    pub post_to: String,
}

impl SetupPlan {
    pub fn is_noop(&self) -> bool {
        self.fields.iter().all(|(_, old, new)| old == new)
    }
}

/// Reads the current inbound URL and plans the change to `publicWebhookUrl` + POST
/// (and the fallback URL and retry override when asked).
pub async fn plan_setup(
    http: &HttpTwilio,
    account: &Account,
    opts: &SetupOptions,
) -> Result<SetupPlan, String> {
    opts.validate()?;
    let creds = Creds::of(account);
    let public = account
        .public_url()
        .map(|u| u.raw.clone())
        .ok_or("publicWebhookUrl is not set: set it to the URL Twilio should call first")?;
    let api = api_base(&account.api_base_url);
    let sid = &account.account_sid;
    match &account.sender {
        Sender::Number(n) => {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("PhoneNumber", n.as_str())
                .finish();
            let v = http
                .get_json(
                    &creds,
                    &format!("{api}/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json?{q}"),
                )
                .await
                .map_err(|e| e.to_string())?;
            let num = v
                .get("incoming_phone_numbers")
                .and_then(Value::as_array)
                .and_then(|l| l.first())
                .ok_or_else(|| format!("{n} is not a number of this Twilio account"))?;
            let get = |k: &str| {
                num.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let pn = get("sid");
            if pn.is_empty() {
                return Err("Twilio's answer has no number SID".into());
            }
            let url = opts.webhook_url(&public);
            let mut fields = vec![
                ("SmsUrl", get("sms_url"), url.clone()),
                (
                    "SmsMethod",
                    get("sms_method").to_ascii_uppercase(),
                    "POST".into(),
                ),
            ];
            if let Some(f) = &opts.fallback_url {
                fields.push(("SmsFallbackUrl", get("sms_fallback_url"), f.clone()));
                fields.push((
                    "SmsFallbackMethod",
                    get("sms_fallback_method").to_ascii_uppercase(),
                    "POST".into(),
                ));
            }
            Ok(SetupPlan {
                what: format!("number {n} ({pn})"),
                url,
                fields,
                post_to: format!("{api}/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers/{pn}.json"),
            })
        }
        Sender::MessagingService(mg) => {
            let base = api_base(&account.messaging_api_base_url);
            let v = http
                .get_json(&creds, &format!("{base}/v1/Services/{mg}"))
                .await
                .map_err(|e| e.to_string())?;
            let get = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let url = opts.webhook_url(&public);
            let mut fields = vec![
                ("InboundRequestUrl", get("inbound_request_url"), url.clone()),
                (
                    "InboundMethod",
                    get("inbound_method").to_ascii_uppercase(),
                    "POST".into(),
                ),
            ];
            if let Some(f) = &opts.fallback_url {
                fields.push(("FallbackUrl", get("fallback_url"), f.clone()));
                fields.push((
                    "FallbackMethod",
                    get("fallback_method").to_ascii_uppercase(),
                    "POST".into(),
                ));
            }
            Ok(SetupPlan {
                what: format!("Messaging Service {mg}"),
                url,
                fields,
                post_to: format!("{base}/v1/Services/{mg}"),
            })
        }
    }
}

pub async fn apply_setup(
    http: &HttpTwilio,
    account: &Account,
    plan: &SetupPlan,
) -> Result<(), String> {
    let form: Vec<(&str, &str)> = plan
        .fields
        .iter()
        .map(|(k, _, new)| (*k, new.as_str()))
        .collect();
    http.post_form(&Creds::of(account), &plan.post_to, &form)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_verdict_table() {
        let ours = "https://sms.example.com/webhooks/sms";
        let cases = [
            (Some(ours), Some("POST"), Status::Ok),
            (
                Some("https://sms.example.com:443/webhooks/sms"),
                Some("POST"),
                Status::Ok,
            ),
            (Some(ours), Some("post"), Status::Ok),
            (Some(ours), Some("GET"), Status::Mismatch),
            (
                Some("https://sms.example.com/webhooks/sms/"),
                Some("POST"),
                Status::Mismatch,
            ),
            (
                Some("https://old.example.com/webhooks/sms"),
                Some("POST"),
                Status::Mismatch,
            ),
            (Some(""), Some("POST"), Status::Missing),
            (None, None, Status::Missing),
        ];
        for (url, method, want) in cases {
            let c = webhook_verdict(ours, url, method, "number");
            assert_eq!(c.status, want, "{url:?} {method:?}: {}", c.detail);
            assert_eq!(c.extra["configuredUrl"], ours);
        }
    }

    #[test]
    fn setup_options_table() {
        let public = "https://sms.example.com/webhooks/sms";
        let o = |fallback: Option<&str>, retries| SetupOptions {
            fallback_url: fallback.map(str::to_string),
            retries,
        };
        assert_eq!(o(None, None).webhook_url(public), public);
        assert_eq!(
            o(None, Some(3)).webhook_url(public),
            "https://sms.example.com/webhooks/sms#rc=3&rp=all"
        );
        assert_eq!(
            o(None, Some(1)).webhook_url("https://a.example/x#ct=500"),
            "https://a.example/x#rc=1&rp=all"
        );
        let valid = [
            o(None, Some(0)),
            o(None, Some(5)),
            o(Some("https://b.example/sms"), None),
        ];
        for v in valid {
            assert_eq!(v.validate(), Ok(()), "{v:?}");
        }
        let invalid = [
            (o(None, Some(6)), "at most 5"),
            (o(Some("b.example/sms"), None), "not an absolute URL"),
            (o(Some("ftp://b.example/sms"), None), "http(s)"),
            (o(Some("https://u:p@b.example/sms"), None), "credentials"),
        ];
        for (v, want) in invalid {
            let e = v.validate().unwrap_err();
            assert!(e.contains(want), "{v:?}: {e}");
        }
        // A URL with the override still matches the configured one.
        let c = webhook_verdict(
            public,
            Some(&o(None, Some(2)).webhook_url(public)),
            Some("POST"),
            "number",
        );
        assert_eq!(c.status, Status::Ok, "{}", c.detail);
    }

    #[test]
    fn recent_errors_table() {
        let cases = [
            (json!({"messages": []}), Status::Ok),
            (
                json!({"messages": [{"error_code": null}, {"error_code": 30003}]}),
                Status::Ok,
            ),
            (json!({"messages": [{"error_code": 11200}]}), Status::Error),
            (json!({}), Status::Ok),
        ];
        for (v, want) in cases {
            let c = recent_errors_verdict(&v, None);
            assert_eq!(c.status, want, "{v}");
            if want == Status::Error {
                assert_eq!(c.extra["code"], 11200);
            }
        }
    }

    #[test]
    fn recent_send_failures_by_code() {
        let sent = |status: &str, code: Option<u32>| json!({"status": status, "error_code": code, "direction": "outbound-api"});
        let mut list: Vec<Value> = (0..16).map(|_| sent("delivered", None)).collect();
        list.extend((0..4).map(|_| sent("undelivered", Some(30034))));
        list.push(sent("failed", Some(30007)));
        // Only the newest 20 count, and inbound ones in the answer do not.
        list.insert(
            0,
            json!({"status": "received", "error_code": 30034, "direction": "inbound"}),
        );
        let c = recent_errors_verdict(&json!({"messages": []}), Some(&json!({ "messages": list })));
        assert_eq!(c.status, Status::Error);
        assert_eq!(c.extra["code"], 30034);
        assert!(
            c.detail.starts_with("4 of the last 20 replies failed with 30034: this number is not registered for US A2P 10DLC: send through a Messaging Service with an approved campaign (messagingServiceSid)"),
            "{}",
            c.detail
        );
        assert!(!c.detail.contains("30007"), "the 21st send is not read");
        // Sent but failing with a code (e.g. 30003) only counts when it failed.
        let ok = recent_errors_verdict(
            &json!({}),
            Some(&json!({"messages": [sent("delivered", None), sent("sent", Some(30003))]})),
        );
        assert_eq!(ok.status, Status::Ok);
        // Both kinds at once: 11200 first.
        let both = recent_errors_verdict(
            &json!({"messages": [{"error_code": 11200}]}),
            Some(&json!({"messages": [sent("failed", Some(21608))]})),
        );
        assert_eq!(both.extra["code"], 11200);
        assert_eq!(both.extra["failures"].as_array().map(Vec::len), Some(2));
        assert!(both
            .detail
            .contains("1 of the last 1 replies failed with 21608"));
    }
}
