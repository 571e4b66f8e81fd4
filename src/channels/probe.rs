//! `channels status --probe`: whether each account is set up right, checked against
//! Twilio (credentials, where the number or Messaging Service sends inbound SMS, recent
//! errors). The verdicts are pure functions of what Twilio answered; [`probe`] only
//! fetches.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::routing::{api_base, incoming_number, messaging_service, not_ours, strip_fragment};
use crate::config::{Account, Config, Sender};
use crate::twilio::RestError;
use crate::twilio::{signature, Creds, HttpTwilio};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Status {
    Ok,
    Mismatch,
    Missing,
    Error,
    Unavailable,
    Skipped,
}

impl Status {
    pub(crate) fn passes(self) -> bool {
        matches!(self, Status::Ok | Status::Skipped)
    }
}

/// One named check and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Check {
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

/// The verdict on an inbound webhook URL and method as Twilio has them.
pub(crate) fn webhook_verdict(
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
pub(crate) const RECENT_SENDS: usize = 20;

/// The verdict on the account's recent messages: inbound ones with error 11200 (Twilio
/// could not reach the webhook), and, when `sends` is given, delivery failures of our
/// own recent sends (status `failed`/`undelivered`), counted by error code so the
/// operator sees e.g. "4 of the last 20 replies failed with 30034" with its hint.
pub(crate) fn recent_errors_verdict(inbound: &Value, sends: Option<&Value>) -> Check {
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
pub(crate) fn hints(config: &Config, account: &Account, checks: &[Check]) -> Vec<String> {
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
    if failed("whatsapp") {
        out.push("WhatsApp: the sender's inbound URL must be publicWebhookUrl with POST too; `smsgate channels setup` sets a number's or Messaging Service's, the Sandbox's is set in the Twilio Console. See docs/whatsapp.md.".into());
    }
    if failed("webhook") {
        out.push("Twilio signs the exact URL it calls, so its inbound URL must equal publicWebhookUrl byte for byte (scheme, host, path, trailing slash) with method POST; `smsgate channels setup` sets it.".into());
    }
    for c in checks
        .iter()
        .filter(|c| c.name == "recentErrors" || c.name == "whatsapp")
    {
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
pub(crate) async fn probe(http: &HttpTwilio, account: &Account) -> Vec<Check> {
    let mut checks = probe_sms(http, account).await;
    if account.whatsapp.is_some() {
        let usable = checks
            .iter()
            .find(|c| c.name == "credentials")
            .is_some_and(|c| c.status != Status::Error);
        checks.push(if usable {
            probe_whatsapp(http, account).await
        } else {
            Check::new("whatsapp", Status::Skipped, "needs working credentials")
        });
    }
    checks
}

/// The WhatsApp sender (CONTRACT §12): the Sandbox (set in the Console, not
/// checkable), the SMS number or service (its webhook check covers it), or its own
/// number or Messaging Service, whose inbound URL must be publicWebhookUrl; then the
/// recent failures of our WhatsApp sends (63016 and the like), by code.
async fn probe_whatsapp(http: &HttpTwilio, account: &Account) -> Check {
    use super::setup::{whatsapp_sender_kind, WhatsappSetup};
    let Some(wa) = &account.whatsapp else {
        return Check::new("whatsapp", Status::Skipped, "WhatsApp is not enabled");
    };
    let Some(public) = account.public_url().map(|u| u.raw.clone()) else {
        return Check::new("whatsapp", Status::Missing, "publicWebhookUrl is not set");
    };
    let mut webhook = match whatsapp_sender_kind(account) {
        WhatsappSetup::Covered(note) => Check::new("whatsapp", Status::Ok, note),
        WhatsappSetup::Manual(note) => Check::new("whatsapp", Status::Skipped, note),
        _ => match &wa.sender {
            Sender::Number(n) => match incoming_number(http, account, n).await {
                Ok(None) => Check::new("whatsapp", Status::Missing, format!("{}; a WhatsApp sender registered elsewhere must point its webhook at publicWebhookUrl in the Twilio Console", not_ours(n))),
                Ok(Some(num)) => {
                    let get = |k: &str| num.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
                    renamed(webhook_verdict(&public, get("sms_url"), get("sms_method"), "WhatsApp sender's number"))
                }
                Err(e) => rest_failure("whatsapp", &e),
            },
            Sender::MessagingService(mg) => match messaging_service(http, account, mg).await {
                Ok(v) => renamed(webhook_verdict(&public, v.get("inbound_request_url").and_then(Value::as_str), v.get("inbound_method").and_then(Value::as_str), "WhatsApp sender's Messaging Service")),
                Err(e) => rest_failure("whatsapp", &e),
            },
        },
    };
    if !webhook.status.passes() {
        return webhook;
    }
    // Our recent WhatsApp sends, by code (a Messaging Service picks its own sender:
    // its sends are filtered by the `whatsapp:` address they went to).
    let creds = Creds::of(account);
    let api = api_base(&account.api_base_url);
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Sender::Number(n) = &wa.sender {
        q.append_pair("From", n.as_str());
    }
    let q = q
        .append_pair("PageSize", &(RECENT_SENDS * 5).to_string())
        .finish();
    let url = format!(
        "{api}/2010-04-01/Accounts/{}/Messages.json?{q}",
        account.account_sid
    );
    match http.get_json(&creds, &url).await {
        Ok(mut v) => {
            if let Some(list) = v.get_mut("messages").and_then(Value::as_array_mut) {
                list.retain(|m| {
                    m.get("to")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.starts_with(crate::phone::WHATSAPP_PREFIX))
                });
            }
            let recent = recent_errors_verdict(&json!({}), Some(&v));
            if recent.status.passes() {
                webhook
            } else {
                webhook.status = recent.status;
                webhook.detail = format!("WhatsApp: {}", recent.detail);
                webhook.extra.extend(recent.extra);
                webhook
            }
        }
        Err(e) => rest_failure("whatsapp", &e),
    }
}

/// A webhook verdict under the name of the WhatsApp check.
fn renamed(mut c: Check) -> Check {
    c.name = "whatsapp";
    c
}

async fn probe_sms(http: &HttpTwilio, account: &Account) -> Vec<Check> {
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
            let webhook = match incoming_number(http, account, n).await {
                Ok(None) => Check::new("webhook", Status::Missing, not_ours(n)),
                Ok(Some(num)) => {
                    let get =
                        |k: &str| num.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
                    match get("sms_application_sid") {
                        Some(app) => Check::new("webhook", Status::Mismatch, format!("a TwiML app ({app}) handles this number's SMS, so its URL is used instead of the number's")).with("configuredUrl", json!(public)),
                        None => webhook_verdict(&public, get("sms_url"), get("sms_method"), "number"),
                    }
                }
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
            let webhook = match messaging_service(http, account, mg).await {
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
