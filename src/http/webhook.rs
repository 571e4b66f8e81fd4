//! The webhook route: checks in the contract's order (404, 405, 413, 403, 400), then
//! durable admission before the 200.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};

use super::error::WebhookError;
use crate::app::App;
use crate::clock::now_ms;
use crate::config::{Account, InboundCheck, Sender};
use crate::phone::redact_str;
use crate::secret::Secret;
use crate::store::{Admission, InboundRecord, RejectedRecord};
use crate::twilio::{fields, form, signature};

/// Twilio's inbound bodies are a few KiB; anything bigger is not Twilio.
pub const MAX_BODY: usize = 32 * 1024;
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const TWIML_EMPTY: &str = "<Response></Response>";

pub type Body = Full<Bytes>;

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
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
                match &e {
                    WebhookError::NotFound => tracing::info!(%path, "webhook: 404 {e}{dropped}"),
                    WebhookError::Store(_) => {
                        tracing::error!(%path, "webhook: {} {e}{dropped}", status.as_u16())
                    }
                    _ => tracing::warn!(%path, "webhook: {} {e}{dropped}", status.as_u16()),
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

async fn read_body(req: Request<Incoming>) -> Result<Bytes, WebhookError> {
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
    req: Request<Incoming>,
) -> Result<Response<Body>, WebhookError> {
    if req.method() != Method::POST {
        return Err(WebhookError::MethodNotAllowed);
    }
    let query = req.uri().query().map(str::to_string);
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
            return Err(WebhookError::BadSignature);
        }
    }

    // Shapes before anything is stored: a re-split signed body must not pass as new.
    let checked = fields::check(&params)?;
    let sid = checked.sid.to_string();
    let now = now_ms();

    if let Some(status) = checked.delivery_status {
        let error_code = form::field(&params, "ErrorCode").filter(|c| !c.is_empty());
        let update = app
            .inbound
            .status(
                sid.clone(),
                status.to_string(),
                error_code.map(str::to_string),
                now,
            )
            .await?;
        tracing::info!(account = %account.id, %sid, status, error_code, update = match update {
            crate::store::StatusUpdate::Applied => "applied",
            crate::store::StatusUpdate::Duplicate => "duplicate",
            crate::store::StatusUpdate::Stale => "stale",
        }, "delivery status");
        app.metrics.webhook(200);
        return Ok(respond(StatusCode::OK, "text/xml", TWIML_EMPTY));
    }

    let from = form::field(&params, "From")
        .filter(|v| !v.is_empty())
        .ok_or(WebhookError::MissingField("From"))?
        .to_string();
    let to = form::field(&params, "To")
        .filter(|v| !v.is_empty())
        .ok_or(WebhookError::MissingField("To"))?;

    let admission = match misaddressed(account, &params, to) {
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
                params,
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
            tracing::info!(account = %account.id, %sid, from = %redact_for_log(&from), "webhook admitted");
        }
        Admission::Duplicate => {
            tracing::info!(account = %account.id, %sid, "duplicate webhook acknowledged, not processed again")
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

fn redact_for_log(number: &str) -> String {
    if tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG {
        number.to_string()
    } else {
        redact_str(number)
    }
}

/// Why a correctly signed webhook is not for this account, if it is not.
fn misaddressed(account: &Account, params: &[(String, String)], to: &str) -> Option<String> {
    if let Some(sid) = form::field(params, "AccountSid") {
        if sid != account.account_sid {
            return Some("AccountSid does not match the account's accountSid".into());
        }
    }
    match &account.sender {
        Sender::Number(n) if n.as_str() != to => Some(format!(
            "To {} is not the account's fromNumber",
            redact_for_log(to)
        )),
        Sender::MessagingService(mg) => match form::field(params, "MessagingServiceSid") {
            Some(got) if !got.is_empty() && got != mg => {
                Some("MessagingServiceSid does not match the account's".into())
            }
            _ => None,
        },
        _ => None,
    }
}
