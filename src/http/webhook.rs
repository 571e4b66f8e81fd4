//! The webhook route: checks in the contract's order (404, 405, 413, 403, 400), then
//! durable admission before the 200.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{header, Method, Request, Response, StatusCode};

use super::error::WebhookError;
use super::forwarded::Origin;
use crate::app::App;
use crate::clock::now_ms;
use crate::config::{Account, InboundCheck, Sender};
use crate::phone::redact_str;
use crate::secret::Secret;
use crate::store::{Admission, InboundRecord, RejectedRecord};
use crate::twilio::fields::{self, InboundSms};
use crate::twilio::{form, signature};

/// Twilio's inbound bodies are a few KiB; anything bigger is not Twilio.
pub(crate) const MAX_BODY: usize = 32 * 1024;
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const TWIML_EMPTY: &str = "<Response></Response>";

pub(crate) type Body = Full<Bytes>;

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(crate) async fn handle(app: &App, req: Request<super::serve::Body>) -> Response<Body> {
    let path = req.uri().path().to_string();
    // The client as `gateway.trustedProxies` allows it to be known (the peer otherwise).
    let client = req
        .extensions()
        .get::<Origin>()
        .map_or_else(|| "unknown".to_string(), |o| o.client.to_string());
    let is_post = req.method() == Method::POST;
    if path.starts_with(super::media::PREFIX) {
        return super::media::handle(app, &req);
    }
    if req.method() == Method::GET {
        match path.as_str() {
            "/healthz" => return respond(StatusCode::OK, "text/plain", "ok\n"),
            // The listener only binds once the store is open; ready while it can write.
            "/readyz" => {
                return match app.writer.health() {
                    Ok(()) => respond(StatusCode::OK, "text/plain", "ready\n"),
                    Err(why) => respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!("not ready: {why}\n"),
                    ),
                }
            }
            _ => {}
        }
    }
    let config = app.config();
    let result = match config.sms.accounts.iter().find(|a| a.webhook_path == path) {
        None => Err(WebhookError::NotFound),
        Some(account) => receive(app, account, req).await,
    };
    match result {
        Ok(resp) => resp,
        Err(e) => {
            let status = e.status();
            app.metrics.webhook(status.as_u16());
            // Rejections are what a flood produces: their log lines are rate-limited.
            let now = crate::clock::now_secs();
            if let Some(dropped) = app.log_limit.allow(now) {
                let dropped = if dropped > 0 {
                    format!(" ({dropped} similar lines suppressed)")
                } else {
                    String::new()
                };
                let near = if is_post && matches!(e, WebhookError::NotFound) {
                    near_miss(
                        &path,
                        config
                            .sms
                            .accounts
                            .iter()
                            .map(|a| (a.id.as_str(), a.webhook_path.as_str())),
                    )
                } else {
                    None
                };
                match (&e, near) {
                    (WebhookError::NotFound, Some((account, right))) => tracing::warn!(
                        %path, %client,
                        "webhook: 404 {e}: `{}` differs from account {account}'s webhookPath `{right}` only by a trailing / or by case; make the URL configured in Twilio end in `{right}` exactly{dropped}", path.escape_debug()
                    ),
                    (WebhookError::NotFound, None) => {
                        tracing::info!(%path, %client, "webhook: 404 {e}{dropped}")
                    }
                    (WebhookError::BadSignature { diagnosis }, _) => tracing::warn!(
                        %path, %client,
                        "webhook: 403 {e}: {diagnosis}{dropped}"
                    ),
                    (WebhookError::Store(_), _) => {
                        tracing::error!(%path, %client, "webhook: {} {e}{dropped}", status.as_u16())
                    }
                    _ => {
                        tracing::warn!(%path, %client, "webhook: {} {e}{dropped}", status.as_u16())
                    }
                }
            }
            let mut r = respond(status, "text/plain", format!("{e}\n"));
            if status == StatusCode::METHOD_NOT_ALLOWED {
                r.headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            }
            r
        }
    }
}

async fn read_body(req: Request<super::serve::Body>) -> Result<Bytes, WebhookError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(WebhookError::TooLarge { limit: MAX_BODY });
    }
    let limited = Limited::new(req.into_body(), MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(WebhookError::BodyTimeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(WebhookError::TooLarge { limit: MAX_BODY })
        }
        Ok(Err(e)) => Err(WebhookError::BadBody(e.to_string())),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

async fn receive(
    app: &App,
    account: &Account,
    req: Request<super::serve::Body>,
) -> Result<Response<Body>, WebhookError> {
    if req.method() != Method::POST {
        return Err(WebhookError::MethodNotAllowed);
    }
    let query = req.uri().query().map(str::to_string);
    let called = called_urls(
        req.extensions().get::<Origin>(),
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str())),
        req.uri().path(),
    );
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let sig_header = header("x-twilio-signature");
    let settings_header = header("x-twilio-webhooks-signature-settings");
    let body = read_body(req).await?;
    let params = form::parse(&body);

    if let InboundCheck::Signed { url } = &account.inbound {
        let sig = sig_header.ok_or(WebhookError::MissingSignature)?;
        let (algorithm, secrets) = signing_keys(account, settings_header.as_deref())
            .inspect_err(|_| app.metrics.signature_failure())?;
        let keys: Vec<&str> = secrets.iter().map(|s| s.expose()).collect();
        if !signature::is_valid_with(algorithm, &keys, &url.raw, query.as_deref(), &params, &sig) {
            app.metrics.signature_failure();
            let matches = |u: &str| {
                signature::is_valid_with(algorithm, &keys, u, query.as_deref(), &params, &sig)
            };
            let signed = signature::signed_url(&url.raw, query.as_deref());
            let diagnosis = diagnose(&account.id, &signed, &called, matches);
            return Err(WebhookError::BadSignature { diagnosis });
        }
    }

    // Shapes before anything is stored: a re-split signed body must not pass as new.
    let checked = fields::check(&params)?;
    let sid = checked.sid.to_string();
    let now = now_ms();

    if let Some(callback) = checked.status() {
        let (status, error_code) = (callback.status, callback.error_code);
        let update = app
            .inbound
            .status(
                sid.clone(),
                status.to_string(),
                error_code.map(str::to_string),
                now,
            )
            .await?;
        // One INFO line per message (its `sent`); a status is a detail of it, unless
        // the message did not arrive. A status for a SID we never sent is a debug line.
        let update_name = match update {
            crate::store::StatusUpdate::Applied => "applied",
            crate::store::StatusUpdate::Duplicate => "duplicate",
            crate::store::StatusUpdate::Stale => "stale",
            crate::store::StatusUpdate::NotOurs => "not-ours",
        };
        let not_ours = matches!(update, crate::store::StatusUpdate::NotOurs);
        if matches!(status, "failed" | "undelivered") && !not_ours {
            tracing::info!(account = %account.id, %sid, status, error_code, update = update_name, "delivery status");
        } else {
            tracing::debug!(account = %account.id, %sid, status, error_code, update = update_name, "delivery status");
        }
        app.metrics.webhook(200);
        return Ok(respond(StatusCode::OK, "text/xml", TWIML_EMPTY));
    }

    if checked.from.is_empty() {
        return Err(WebhookError::MissingField("From"));
    }
    if checked.to.is_empty() {
        return Err(WebhookError::MissingField("To"));
    }
    let sms = checked.to_sms();

    let admission = match misaddressed(account, &sms) {
        Some(reason) => {
            tracing::warn!(account = %account.id, %sid, "webhook kept as rejected, not processed: {reason}");
            let rec = RejectedRecord {
                sid: sid.clone(),
                account: account.id.clone(),
                reason,
                received_at_ms: now,
            };
            app.inbound.reject(rec).await?
        }
        None => {
            let rec = InboundRecord {
                sid: sid.clone(),
                account: account.id.clone(),
                sms,
                received_at_ms: now,
            };
            // Returns after the fsync that made it durable; a duplicate waits for that
            // fsync too, since its first copy may be in the same batch. The hub learns
            // of the message from the writer, so a client that leaves now loses nothing.
            app.inbound.admit(rec).await?
        }
    };
    match admission {
        Admission::Admitted => {
            tracing::debug!(account = %account.id, %sid, from = %redact_for_log(checked.from), "webhook admitted");
        }
        Admission::Duplicate => {
            tracing::debug!(account = %account.id, %sid, "duplicate webhook acknowledged, not processed again")
        }
    }
    app.metrics.webhook(200);
    Ok(respond(StatusCode::OK, "text/xml", TWIML_EMPTY))
}

/// The secrets a webhook's signature may be made with: the auth token and the previous
/// ones, or the shared key the settings header names.
fn signing_keys<'a>(
    account: &'a Account,
    settings: Option<&str>,
) -> Result<(signature::Algorithm, Vec<&'a Secret>), WebhookError> {
    match signature::settings(settings).map_err(WebhookError::BadSignatureSettings)? {
        (signature::Algorithm::HmacSha1, _) => Ok((
            signature::Algorithm::HmacSha1,
            std::iter::once(&account.auth_token)
                .chain(&account.previous_auth_tokens)
                .collect(),
        )),
        (signature::Algorithm::HmacSha256, key) => {
            let key = key.unwrap_or_default();
            match account.webhook_signing_keys.get(&key) {
                Some(secret) => Ok((signature::Algorithm::HmacSha256, vec![secret])),
                None => Err(WebhookError::BadSignatureSettings(format!(
                    "no webhookSigningKeys entry for key id {key:?}"
                ))),
            }
        }
    }
}

/// The URLs a request may have been called at, best guess first (no query: the
/// signature check adds the request's own): the scheme (`X-Forwarded-Proto` from a
/// trusted proxy, else the connection's), the host (`X-Forwarded-Host` from a trusted
/// proxy, else `Host`), the path; then the same with the other scheme, for a proxy
/// that terminates TLS without saying so. Nothing when the host is not a plain host
/// name (it is the caller's words and goes to the log).
pub(crate) fn called_urls(origin: Option<&Origin>, host: Option<&str>, path: &str) -> Vec<String> {
    let forwarded_host = origin.and_then(|o| o.host.as_deref());
    let Some(host) = forwarded_host.or(host).filter(|h| plain_host(h)) else {
        return Vec::new();
    };
    let tls = origin.is_some_and(|o| o.tls);
    let scheme =
        origin
            .and_then(|o| o.proto.as_deref())
            .unwrap_or(if tls { "https" } else { "http" });
    let other = if scheme == "https" { "http" } else { "https" };
    [scheme, other]
        .iter()
        .map(|s| format!("{s}://{host}{path}"))
        .collect()
}

fn plain_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

/// What a 403's log line says (CONTRACT §11): the URL signed against and, when a URL
/// the request was called at matches the signature, that `publicWebhookUrl` is wrong
/// and what Twilio called; otherwise that the token is likely wrong (or a proxy
/// changed the body). `matches` checks one URL against the signature.
pub(crate) fn diagnose(
    account: &str,
    signed: &str,
    called: &[String],
    matches: impl Fn(&str) -> bool,
) -> String {
    let key = if account == "default" {
        "channels.sms.publicWebhookUrl".to_string()
    } else {
        format!("channels.sms.accounts.{account}.publicWebhookUrl")
    };
    match called.iter().find(|u| u.as_str() != signed && matches(u)) {
        Some(hit) => format!(
            "checked against {signed:?}, but the signature matches {hit:?}, the URL Twilio called: {key} is wrong; set it to {hit:?} (or point Twilio at {signed:?})"
        ),
        None => {
            let tried = if called.is_empty() {
                String::new()
            } else {
                format!(" nor any URL built from the request ({})", called.join(", "))
            };
            format!(
                "checked against {signed:?} ({key}), and it matches neither that{tried}: the auth token is likely wrong (channels.sms authToken must be the account's current Auth Token), or a proxy changed the body"
            )
        }
    }
}

/// The webhook path a request's path misses only by a trailing `/` or by case, and
/// its account.
pub(crate) fn near_miss<'a>(
    path: &str,
    webhooks: impl Iterator<Item = (&'a str, &'a str)>,
) -> Option<(&'a str, &'a str)> {
    let norm = |p: &str| p.trim_end_matches('/').to_ascii_lowercase();
    let want = norm(path);
    webhooks
        .into_iter()
        .find(|(_, wp)| *wp != path && norm(wp) == want && !want.is_empty())
}

fn redact_for_log(number: &str) -> String {
    if tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG {
        number.to_string()
    } else {
        redact_str(number)
    }
}

/// Why a correctly signed webhook is not for this account, if it is not.
fn misaddressed(account: &Account, sms: &InboundSms) -> Option<String> {
    let to = sms.to.as_str();
    if let Some(sid) = sms.account_sid.as_deref() {
        if sid != account.account_sid {
            return Some("AccountSid does not match the account's accountSid".into());
        }
    }
    let sender = if sms.channel == crate::phone::Channel::Whatsapp {
        match &account.whatsapp {
            Some(w) => &w.sender,
            None => {
                return Some("a WhatsApp message, and WhatsApp is not enabled for this account (set whatsapp.enabled)".into())
            }
        }
    } else {
        &account.sender
    };
    match sender {
        Sender::Number(n) if n.as_str() != to => Some(format!(
            "To {} is not the account's {}",
            redact_for_log(to),
            if n.is_whatsapp() {
                "WhatsApp sender (whatsapp.from)"
            } else {
                "fromNumber"
            }
        )),
        Sender::MessagingService(mg) => match sms.messaging_service_sid.as_deref() {
            Some(got) if got != mg => {
                Some("MessagingServiceSid does not match the account's".into())
            }
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(tls: bool, proto: Option<&str>, host: Option<&str>) -> Origin {
        Origin {
            client: "127.0.0.1".parse().unwrap(),
            proto: proto.map(str::to_string),
            host: host.map(str::to_string),
            tls,
        }
    }

    #[test]
    fn the_called_url_is_built_from_the_request() {
        let o = origin(false, None, None);
        assert_eq!(
            called_urls(Some(&o), Some("gw.example.com:8080"), "/webhooks/sms"),
            [
                "http://gw.example.com:8080/webhooks/sms",
                "https://gw.example.com:8080/webhooks/sms"
            ]
        );
        let o = origin(true, None, None);
        assert_eq!(called_urls(Some(&o), Some("a.b"), "/x")[0], "https://a.b/x");
        // A trusted proxy's headers win (the Origin only carries them from one).
        let o = origin(false, Some("https"), Some("sms.example.com"));
        assert_eq!(
            called_urls(Some(&o), Some("127.0.0.1:8789"), "/x")[0],
            "https://sms.example.com/x"
        );
        // A host that is not a host name is not repeated into the log.
        assert!(called_urls(Some(&o), Some("x"), "/x").len() == 2);
        let o = origin(false, None, None);
        assert!(called_urls(Some(&o), Some("evil\u{1b}[2J"), "/x").is_empty());
        assert!(called_urls(Some(&o), None, "/x").is_empty());
    }

    #[test]
    fn a_403_says_whether_the_url_or_the_token_is_wrong() {
        let signed = "https://sms.example.com/webhooks/sms";
        let called = vec![
            "http://10.0.0.5:8789/webhooks/sms".to_string(),
            "https://10.0.0.5:8789/webhooks/sms".to_string(),
        ];
        let wrong_url = diagnose("default", signed, &called, |u| u == called[1]);
        assert!(
            wrong_url.contains("channels.sms.publicWebhookUrl is wrong"),
            "{wrong_url}"
        );
        assert!(
            wrong_url.contains("\"https://10.0.0.5:8789/webhooks/sms\", the URL Twilio called"),
            "{wrong_url}"
        );
        let wrong_token = diagnose("support", signed, &called, |_| false);
        assert!(
            wrong_token.contains("auth token is likely wrong"),
            "{wrong_token}"
        );
        assert!(
            wrong_token.contains("or a proxy changed the body"),
            "{wrong_token}"
        );
        assert!(
            wrong_token.contains("channels.sms.accounts.support.publicWebhookUrl"),
            "{wrong_token}"
        );
        assert!(wrong_token.contains(signed));
    }

    #[test]
    fn near_misses_are_a_trailing_slash_or_case_away() {
        let hooks = [("default", "/webhooks/sms"), ("support", "/hooks/Support")];
        let cases = [
            ("/webhooks/sms/", Some(("default", "/webhooks/sms"))),
            ("/Webhooks/SMS", Some(("default", "/webhooks/sms"))),
            ("/WEBHOOKS/SMS//", Some(("default", "/webhooks/sms"))),
            ("/hooks/support", Some(("support", "/hooks/Support"))),
            ("/webhooks/sms", None),
            ("/webhooks/sm", None),
            ("/", None),
        ];
        for (path, want) in cases {
            assert_eq!(near_miss(path, hooks.iter().copied()), want, "{path}");
        }
    }
}
