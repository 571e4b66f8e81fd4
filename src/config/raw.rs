//! The configuration file as written: every key optional, every leaf value kept even
//! when it has the wrong type, so validation can report all problems at once with their
//! key paths. Unknown keys are collected by `serde_ignored` (see `super::load`) for the
//! same reason: `deny_unknown_fields` would stop at the first one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A leaf value: the expected type, or whatever was written instead.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Field<T> {
    Ok(T),
    Invalid(Value),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawConfig {
    pub gateway: Option<RawGateway>,
    pub channels: Option<RawChannels>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawGateway {
    pub listen: Option<Field<String>>,
    pub tls: Option<RawTls>,
    pub state_dir: Option<Field<String>>,
    pub agent_socket: Option<Field<String>>,
    pub admin_socket: Option<Field<String>>,
    pub max_connections: Option<Field<u32>>,
    pub trusted_proxies: Option<Field<Vec<String>>>,
    pub metrics_listen: Option<Field<String>>,
    pub agent_queue_max_age: Option<Field<Value>>,
    pub log: Option<RawLog>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawTls {
    pub cert_file: Option<Field<String>>,
    pub key_file: Option<Field<String>>,
    pub acme: Option<RawAcme>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawAcme {
    pub domains: Option<Field<Vec<String>>>,
    pub email: Option<Field<String>>,
    pub directory_url: Option<Field<String>>,
    pub staging: Option<Field<bool>>,
    pub http01_listen: Option<Field<String>>,
    pub directory_ca_file: Option<Field<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawLog {
    pub level: Option<Field<String>>,
    pub format: Option<Field<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawChannels {
    pub sms: Option<RawAccount>,
}

/// An account key that is present: `null` becomes `Some(Field::Invalid(Null))` instead
/// of `None`, so an account can say "unset" and stop inheriting the key (see
/// [`is_unset`]). Absent keys stay `None` through `#[serde(default)]`.
fn nullable<'de, D, T>(d: D) -> Result<Option<Field<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Field::<T>::deserialize(d).map(Some)
}

/// Whether a key is unset: absent, or `null`.
pub(crate) fn is_unset<T>(f: &Option<Field<T>>) -> bool {
    matches!(f, None | Some(Field::Invalid(Value::Null)))
}

/// The keys of `channels.sms` and of each `channels.sms.accounts.<id>`. `accounts`,
/// `defaultAccount` are only meaningful at the top; validation says so when they
/// appear inside an account.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawAccount {
    #[serde(default, deserialize_with = "nullable")]
    pub enabled: Option<Field<bool>>,
    #[serde(default, deserialize_with = "nullable")]
    pub account_sid: Option<Field<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub auth_token: Option<Field<SecretInput>>,
    #[serde(default, deserialize_with = "nullable")]
    pub previous_auth_tokens: Option<Field<Vec<SecretInput>>>,
    #[serde(default, deserialize_with = "nullable")]
    pub webhook_signing_keys: Option<Field<BTreeMap<String, SecretInput>>>,
    #[serde(default, deserialize_with = "nullable")]
    pub from_number: Option<Field<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub messaging_service_sid: Option<Field<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub public_webhook_url: Option<Field<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub webhook_path: Option<Field<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub dm_policy: Option<Field<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub allow_from: Option<Field<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    pub default_to: Option<Field<String>>,
    /// Whom the agent may text on its own (CONTRACT §9): numbers, `+prefix*`, `"*"`.
    #[serde(default, deserialize_with = "nullable")]
    pub allow_to: Option<Field<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    pub text_chunk_limit: Option<Field<u32>>,
    /// Media per message in MB (10^6 bytes), outbound and inbound downloads (§10).
    #[serde(default, deserialize_with = "nullable")]
    pub media_max_mb: Option<Field<f64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub dangerously_disable_signature_validation: Option<Field<bool>>,
    #[serde(default, deserialize_with = "nullable")]
    pub api_base_url: Option<Field<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub messaging_api_base_url: Option<Field<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub language: Option<Field<String>>,
    /// `{ perHour, perDay, perRecipientPerHour, maxHeld }`; keys checked by validation.
    #[serde(default, deserialize_with = "nullable")]
    pub outbound_limits: Option<Field<BTreeMap<String, Value>>>,
    #[serde(default, deserialize_with = "nullable")]
    pub release_held: Option<Field<String>>,
    /// `{ perSenderPerMinute }`.
    #[serde(default, deserialize_with = "nullable")]
    pub inbound_limits: Option<Field<BTreeMap<String, Value>>>,
    /// `{ pairingCode, approved, newConversation }`; keys checked by validation.
    #[serde(default, deserialize_with = "nullable")]
    pub texts: Option<Field<BTreeMap<String, String>>>,
    /// `{ enabled, approvers, timeoutSecs, target, agentFilter, sessionFilter }`
    /// (CONTRACT §9); keys checked by `validate::approvals`.
    #[serde(default, deserialize_with = "nullable")]
    pub exec_approvals: Option<Field<BTreeMap<String, Value>>>,
    /// `{ enabled, from, templates: { reengage } }` (CONTRACT §12); keys checked by
    /// `validate::whatsapp`.
    #[serde(default, deserialize_with = "nullable")]
    pub whatsapp: Option<Field<BTreeMap<String, Value>>>,
    pub accounts: Option<BTreeMap<String, RawAccount>>,
    #[serde(default, deserialize_with = "nullable")]
    pub default_account: Option<Field<String>>,
}

/// `authToken`: a literal, or a reference resolved at load time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SecretInput {
    Plain(String),
    Ref(SecretRef),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub source: String,
    #[serde(default)]
    pub provider: Option<String>,
    pub id: String,
}
