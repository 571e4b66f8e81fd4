//! The environment a config is resolved in, and its fallbacks for the `default` account.

use std::collections::BTreeMap;

use serde_json::Value;

use super::super::raw::{Field, RawAccount, SecretInput};

/// The environment a config is resolved in: variables (a snapshot) and where relative
/// `file` secrets live.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: BTreeMap<String, String>,
    /// Leave SecretRefs that cannot be resolved here empty instead of failing: for CLI
    /// commands that never use the token (pairing, senders, queue), which an operator
    /// runs outside the service, where `$CREDENTIALS_DIRECTORY` does not exist.
    pub tolerate_unresolved_secrets: bool,
    /// Check that `stateDir` can be created or written (file system access, so off in
    /// [`Env::default`] for pure validation). Only strict loads check it: an operator's
    /// `pairing list` need not be able to write the service's directory.
    pub probe_state_dir: bool,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
            tolerate_unresolved_secrets: false,
            probe_state_dir: true,
        }
    }

    /// A variable that is set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

pub(super) fn env_name(key: &str, env: &Env) -> &'static str {
    match key {
        "accountSid" => "TWILIO_ACCOUNT_SID",
        "authToken" => "TWILIO_AUTH_TOKEN",
        "fromNumber" if env.get("TWILIO_PHONE_NUMBER").is_none() => "TWILIO_SMS_FROM",
        "fromNumber" => "TWILIO_PHONE_NUMBER",
        "messagingServiceSid" => "TWILIO_MESSAGING_SERVICE_SID",
        "publicWebhookUrl" => "SMS_PUBLIC_WEBHOOK_URL",
        "webhookPath" => "SMS_WEBHOOK_PATH",
        "allowFrom" => "SMS_ALLOWED_USERS",
        "textChunkLimit" => "SMS_TEXT_CHUNK_LIMIT",
        _ => "(environment)",
    }
}

/// The environment's fallbacks for the `default` account, as a raw layer.
pub(super) fn env_layer(env: &Env) -> RawAccount {
    let s = |name: &str| env.get(name).map(|v| Field::Ok(v.trim().to_string()));
    RawAccount {
        account_sid: s("TWILIO_ACCOUNT_SID"),
        auth_token: env
            .get("TWILIO_AUTH_TOKEN")
            .map(|v| Field::Ok(SecretInput::Plain(v.to_string()))),
        from_number: s("TWILIO_PHONE_NUMBER").or_else(|| s("TWILIO_SMS_FROM")),
        messaging_service_sid: s("TWILIO_MESSAGING_SERVICE_SID"),
        public_webhook_url: s("SMS_PUBLIC_WEBHOOK_URL"),
        webhook_path: s("SMS_WEBHOOK_PATH"),
        allow_from: env.get("SMS_ALLOWED_USERS").map(|v| {
            Field::Ok(
                v.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect(),
            )
        }),
        text_chunk_limit: env
            .get("SMS_TEXT_CHUNK_LIMIT")
            .map(|v| match v.trim().parse() {
                Ok(n) => Field::Ok(n),
                Err(_) => Field::Invalid(Value::String(v.to_string())),
            }),
        ..Default::default()
    }
}
