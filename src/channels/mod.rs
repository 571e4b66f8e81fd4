//! `channels capabilities | status | setup`: what the channel can do
//! ([`capabilities`], [`account_summary`]), whether each account is set up right
//! (checked against Twilio with `--probe`: [`probe`]), and pointing the Twilio number or
//! Messaging Service at our webhook ([`setup`]). Both read the number or service through
//! `routing`. The verdicts are pure functions of what Twilio answered; the calls around
//! them only fetch.

pub(crate) mod probe;
mod routing;
pub(crate) mod setup;

use serde_json::{json, Value};

use crate::config::{Config, Sender};

pub(crate) use probe::{hints, probe, Check, Status};
pub(crate) use setup::{apply_setup, plan_setup, plan_whatsapp_setup, SetupOptions, WhatsappSetup};

pub(crate) fn capabilities() -> Value {
    json!({
        "channel": "sms",
        "capabilities": {
            "inbound": true,
            "outbound": true,
            "directMessages": true,
            "groups": false,
            "media": { "inbound": true, "outbound": true, "maxPerMessage": 10, "maxInboundBytesPerMessage": crate::twilio::media::MAX_MEDIA_BYTES_PER_MESSAGE },
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
pub(crate) fn account_summary(config: &Config) -> Vec<Value> {
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
