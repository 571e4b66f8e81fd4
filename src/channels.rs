//! `channels capabilities | status | setup`: what the channel can do, whether each
//! account is set up right (checked against Twilio with `--probe`), and pointing the
//! Twilio number or Messaging Service at our webhook. The verdicts are pure functions
//! of what Twilio answered; the calls around them only fetch.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::{Account, Config, Sender};
use crate::twilio::client::RestError;
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
    let same = url == configured || signature::url_variants(configured).iter().any(|v| v == url);
    match (same, method == "POST") {
        (true, true) => base(Status::Ok, format!("the {what} sends SMS to {url} (POST)")),
        (true, false) => base(Status::Mismatch, format!("the {what} uses {method} for {url}; smsgate needs POST")),
        (false, _) => base(Status::Mismatch, format!("the {what} sends SMS to {url} ({method}), but publicWebhookUrl is {configured}; they must match byte for byte")),
    }
}

/// The verdict on the account's recent inbound messages (`messages[].error_code`).
pub fn recent_errors_verdict(messages: &Value) -> Check {
    let failed = messages
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |list| {
            list.iter()
                .filter(|m| m.get("error_code").and_then(Value::as_u64) == Some(11200))
                .count()
        });
    if failed > 0 {
        Check::new("recentErrors", Status::Error, format!("{failed} recent inbound message(s) failed with Twilio error 11200: Twilio could not get a 200 from the webhook")).with("code", json!(11200))
    } else {
        Check::new(
            "recentErrors",
            Status::Ok,
            "no recent inbound message has error 11200",
        )
    }
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
    if failed("recentErrors") {
        out.push("Error 11200 means Twilio's request to the webhook failed or timed out (15 s): check that publicWebhookUrl is reachable from the internet, that its certificate is publicly trusted, and the gateway's log.".into());
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
            let recent = match http
                .get_json(
                    &creds,
                    &format!("{api}/2010-04-01/Accounts/{sid}/Messages.json?{q}"),
                )
                .await
            {
                Ok(v) => recent_errors_verdict(&v),
                Err(e) => rest_failure("recentErrors", &e),
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
            (
                webhook,
                Check::new(
                    "recentErrors",
                    Status::Skipped,
                    "needs fromNumber to look up inbound messages",
                ),
            )
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

/// Reads the current inbound URL and plans the change to `publicWebhookUrl` + POST.
pub async fn plan_setup(http: &HttpTwilio, account: &Account) -> Result<SetupPlan, String> {
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
            Ok(SetupPlan {
                what: format!("number {n} ({pn})"),
                url: public.clone(),
                fields: vec![
                    ("SmsUrl", get("sms_url"), public),
                    (
                        "SmsMethod",
                        get("sms_method").to_ascii_uppercase(),
                        "POST".into(),
                    ),
                ],
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
            Ok(SetupPlan {
                what: format!("Messaging Service {mg}"),
                url: public.clone(),
                fields: vec![
                    ("InboundRequestUrl", get("inbound_request_url"), public),
                    (
                        "InboundMethod",
                        get("inbound_method").to_ascii_uppercase(),
                        "POST".into(),
                    ),
                ],
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
            let c = recent_errors_verdict(&v);
            assert_eq!(c.status, want, "{v}");
            if want == Status::Error {
                assert_eq!(c.extra["code"], 11200);
            }
        }
    }
}
