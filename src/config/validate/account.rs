//! One SMS account, resolved through its layers: each concern in its own function.

use url::Url;

use super::super::raw::{is_unset, Field, RawAccount};
use super::super::{
    Account, AllowFrom, DmPolicy, InactiveAccount, InboundCheck, PublicUrl, Sender,
};
use super::errors::{describe, take, Problems};
use super::layers::Layers;
use super::secrets::resolve_secret;
use crate::phone::E164;
use crate::secret::Secret;

const RESERVED_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// One account after validation: usable, or kept to say why it cannot send.
pub(super) enum Resolved {
    Usable(Box<Account>),
    Inactive(InactiveAccount, crate::config::checks::Unusable),
}

pub(super) fn account(id: &str, l: &Layers, p: &mut Problems) -> Resolved {
    let (f, path) = l.get("enabled", |r| &r.enabled);
    let enabled = take(f, &path, "true or false", p).copied().unwrap_or(true);

    let webhook_path = webhook_path(l, p);

    let Credentials {
        account_sid,
        auth_token,
        previous_auth_tokens,
        webhook_signing_keys,
    } = credentials(l, p);
    let sender = sender(l, p);

    let (f, url_path) = l.get("publicWebhookUrl", |r| &r.public_webhook_url);
    let public_url = take(f, &url_path, "an absolute https URL string", p)
        .and_then(|s| public_url(s, &url_path, p));
    let (f, path) = l.get("dangerouslyDisableSignatureValidation", |r| {
        &r.dangerously_disable_signature_validation
    });
    let unsigned = take(f, &path, "true or false", p).copied().unwrap_or(false);

    let (dm_policy, allow_from) = policy(l, p);

    let (f, default_to_path) = l.get("defaultTo", |r| &r.default_to);
    let default_to = e164(f, &default_to_path, p);
    let own = match &sender {
        Some(Sender::Number(n)) => Some(n),
        _ => None,
    };
    if default_to.is_some() && default_to.as_ref() == own {
        p.add(
            &default_to_path,
            format!(
                "{OWN_NUMBER}; set the number of the person the agent texts when a send names none"
            ),
        );
    }
    let allow_to = allow_to(l, own, p);
    let exec_approvals =
        super::approvals::exec_approvals(l, &allow_from, default_to.as_ref(), own, p);
    let (f, path) = l.get("textChunkLimit", |r| &r.text_chunk_limit);
    let text_chunk_limit = match take(f, &path, "a whole number from 1 to 1600", p) {
        None => 1500,
        Some(&n) if (1..=1600).contains(&n) => n as usize,
        Some(&n) => {
            p.add(&path, format!("{n} is out of range; Twilio takes at most 1600 characters per message: use 1 to 1600 (default 1500)"));
            1500
        }
    };
    let (f, path) = l.get("mediaMaxMb", |r| &r.media_max_mb);
    let media_max_bytes = match take(f, &path, "a number of MB above 0 and at most 5", p) {
        None => crate::mms::MAX_BYTES,
        Some(&n) if n > 0.0 && n <= 5.0 => (n * 1e6) as u64,
        Some(&n) => {
            p.add(&path, format!("{n} is out of range; Twilio takes at most 5 MB of media per message: use a number above 0 and at most 5 (default 5)"));
            crate::mms::MAX_BYTES
        }
    };
    let texts = texts(l, p);
    let (outbound_limits, max_held) = outbound_limits(l, p);
    let inbound_per_sender_per_minute = inbound_limits(l, p);
    let (f, path) = l.get("releaseHeld", |r| &r.release_held);
    let release_held_auto = match take(f, &path, "\"manual\" or \"auto\"", p).map(String::as_str) {
        None | Some("manual") => false,
        Some("auto") => true,
        Some(other) => {
            p.add(&path, format!("{other:?} is not a release mode; use \"manual\" (smsgate queue release) or \"auto\" (when the window allows)"));
            false
        }
    };
    let (api_base_url, messaging_api_base_url) = api_urls(l, p);
    let whatsapp = super::whatsapp::whatsapp(l, sender.as_ref(), p);

    use crate::config::checks::Unusable;
    let inactive = |reason: String, why: Unusable| {
        Resolved::Inactive(
            InactiveAccount {
                id: id.to_string(),
                webhook_path: webhook_path.clone(),
                reason,
            },
            why,
        )
    };
    if !enabled {
        return inactive("enabled is false".into(), Unusable::Disabled);
    }
    let mut missing = Vec::new();
    if f_unset(l, |r| &r.account_sid) {
        missing.push("accountSid");
    }
    if f_unset(l, |r| &r.auth_token) {
        missing.push("authToken");
    }
    if f_unset(l, |r| &r.from_number) && f_unset(l, |r| &r.messaging_service_sid) {
        missing.push("fromNumber or messagingServiceSid");
    }
    // Named with the rest, so one run lists everything still to fill in.
    if !missing.is_empty() && !unsigned && f_unset(l, |r| &r.public_webhook_url) {
        missing.push("publicWebhookUrl");
    }
    if !missing.is_empty() {
        return inactive(
            format!("missing {}", missing.join(", ")),
            Unusable::Missing(missing),
        );
    }
    let inbound = if unsigned {
        InboundCheck::Unsigned { url: public_url }
    } else {
        match public_url {
            Some(url) => InboundCheck::Signed { url },
            None => {
                if f_unset(l, |r| &r.public_webhook_url) {
                    p.add(&url_path, "missing; Twilio's signature covers the exact URL it calls, so set it to that URL, e.g. \"https://sms.example.com/webhooks/sms\"");
                }
                return inactive(
                    "publicWebhookUrl is missing or invalid".into(),
                    Unusable::Invalid,
                );
            }
        }
    };
    match (account_sid, auth_token, sender) {
        (Some(account_sid), Some(auth_token), Some(sender)) => {
            Resolved::Usable(Box::new(Account {
                id: id.to_string(),
                account_sid,
                auth_token,
                previous_auth_tokens,
                webhook_signing_keys,
                sender,
                webhook_path,
                inbound,
                dm_policy,
                allow_from,
                default_to,
                allow_to,
                exec_approvals,
                text_chunk_limit,
                media_max_bytes,
                texts,
                outbound_limits,
                max_held,
                release_held_auto,
                inbound_per_sender_per_minute,
                api_base_url,
                messaging_api_base_url,
                whatsapp,
            }))
        }
        // Set but invalid: the problem is already recorded.
        _ => inactive("invalid credentials or sender".into(), Unusable::Invalid),
    }
}

/// `webhookPath`: a URL path of its own, never one of the daemon's endpoints.
fn webhook_path(l: &Layers, p: &mut Problems) -> String {
    let (f, path) = l.get("webhookPath", |r| &r.webhook_path);
    let webhook_path = match take(f, &path, "a path string", p) {
        None => "/webhooks/sms".to_string(),
        Some(s) => {
            let s = s.trim();
            let norm = if s.starts_with('/') {
                s.to_string()
            } else {
                format!("/{s}")
            };
            if norm.len() < 2 || norm.contains(['?', '#', ' ']) {
                p.add(
                    &path,
                    format!("{s:?} is not a URL path; use e.g. \"/webhooks/sms\""),
                );
            } else if RESERVED_PATHS.contains(&norm.as_str()) {
                p.add(
                    &path,
                    format!(
                        "{norm:?} is reserved for the daemon's own endpoints; choose another path"
                    ),
                );
            }
            norm
        }
    };
    webhook_path
}

/// What signs and authenticates: the Account SID, the token and its predecessors, and
/// the webhook signing keys.
struct Credentials {
    account_sid: Option<String>,
    auth_token: Option<Secret>,
    previous_auth_tokens: Vec<Secret>,
    webhook_signing_keys: std::collections::BTreeMap<String, Secret>,
}

fn credentials(l: &Layers, p: &mut Problems) -> Credentials {
    let (f, sid_path) = l.get("accountSid", |r| &r.account_sid);
    let account_sid = sid(f, &sid_path, "AC", "an Account SID", p);

    let (f, token_path) = l.get("authToken", |r| &r.auth_token);
    let auth_token = take(
        f,
        &token_path,
        "a string or a SecretRef { source: \"env\" | \"file\", provider: \"default\", id: \"…\" }",
        p,
    )
    .and_then(|s| resolve_secret(s, &token_path, l.env, p));

    let (f, path) = l.get("previousAuthTokens", |r| &r.previous_auth_tokens);
    let previous_auth_tokens: Vec<Secret> = take(f, &path, "a list of strings or SecretRefs", p)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, s)| resolve_secret(s, &format!("{path}[{i}]"), l.env, p))
        .collect();
    let (f, path) = l.get("webhookSigningKeys", |r| &r.webhook_signing_keys);
    let webhook_signing_keys: std::collections::BTreeMap<String, Secret> = take(
        f,
        &path,
        "an object of key id → secret (string or SecretRef)",
        p,
    )
    .into_iter()
    .flatten()
    .filter_map(|(id, s)| {
        resolve_secret(s, &format!("{path}.{id}"), l.env, p).map(|s| (id.clone(), s))
    })
    .collect();
    Credentials {
        account_sid,
        auth_token,
        previous_auth_tokens,
        webhook_signing_keys,
    }
}

/// `fromNumber`, else `messagingServiceSid`.
fn sender(l: &Layers, p: &mut Problems) -> Option<Sender> {
    let (f, path) = l.get("fromNumber", |r| &r.from_number);
    let from = e164(f, &path, p);
    let (f, path) = l.get("messagingServiceSid", |r| &r.messaging_service_sid);
    let service = sid(f, &path, "MG", "a Messaging Service SID", p);
    match (from, service) {
        (Some(n), _) => Some(Sender::Number(n)),
        (None, Some(s)) => Some(Sender::MessagingService(s)),
        (None, None) => None,
    }
}

/// `dmPolicy` and `allowFrom`, and whether the list fits the policy.
fn policy(l: &Layers, p: &mut Problems) -> (DmPolicy, AllowFrom) {
    let (f, policy_path) = l.get("dmPolicy", |r| &r.dm_policy);
    let dm_policy = match take(f, &policy_path, "a policy name", p).map(String::as_str) {
        None | Some("pairing") => DmPolicy::Pairing,
        Some("allowlist") => DmPolicy::Allowlist,
        Some("open") => DmPolicy::Open,
        Some("disabled") => DmPolicy::Disabled,
        Some(other) => {
            p.add(&policy_path, format!("{other:?} is not a policy; use \"pairing\", \"allowlist\", \"open\" or \"disabled\""));
            DmPolicy::Pairing
        }
    };
    let (f, allow_path) = l.get("allowFrom", |r| &r.allow_from);
    let mut allow_from = AllowFrom::default();
    for (i, entry) in take(f, &allow_path, "a list of phone numbers", p)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if entry.trim() == "*" {
            allow_from.anyone = true;
        } else {
            let sms_only = crate::phone::strip_channel_prefix(entry) != entry.trim();
            match E164::parse_address(entry) {
                Ok(n) if n.is_whatsapp() => {
                    allow_from.whatsapp_only.insert(n);
                }
                Ok(n) if sms_only => {
                    allow_from.sms_only.insert(n);
                }
                Ok(n) => {
                    allow_from.numbers.insert(n);
                }
                Err(e) => p.add(
                    format!("{allow_path}[{i}]"),
                    format!("{e}, or \"*\" for anyone"),
                ),
            }
        }
    }
    match dm_policy {
        DmPolicy::Allowlist if allow_from.is_empty() => p.add(
            &allow_path,
            "dmPolicy \"allowlist\" needs at least one number here; add the numbers that may text the agent, e.g. [\"+15557654321\"]",
        ),
        DmPolicy::Open if !allow_from.anyone => p.add(
            &allow_path,
            "dmPolicy \"open\" needs \"*\" here, to show that anyone may text the agent; add \"*\" or use dmPolicy \"pairing\"",
        ),
        _ => {}
    }
    (dm_policy, allow_from)
}

/// `allowTo`: whom the agent may text on its own (CONTRACT §9). Unset is `None` (the
/// people known to the account); each entry is checked with its index in the path.
fn allow_to(l: &Layers, own: Option<&E164>, p: &mut Problems) -> Option<crate::config::AllowTo> {
    let (f, path) = l.get("allowTo", |r| &r.allow_to);
    let entries = take(
        f,
        &path,
        "a list of E.164 numbers, prefixes such as \"+44*\", or \"*\"",
        p,
    )?;
    let mut allow_to = crate::config::AllowTo::default();
    for (i, entry) in entries.iter().enumerate() {
        let before = allow_to.numbers.len();
        match allow_to.add(entry) {
            Err(e) => p.add(format!("{path}[{i}]"), e),
            Ok(())
                if allow_to.numbers.len() > before
                    && own.is_some_and(|o| allow_to.numbers.contains(o)) =>
            {
                if let Some(o) = own {
                    allow_to.numbers.remove(o);
                }
                p.add(format!("{path}[{i}]"), format!("{OWN_NUMBER}; remove it"));
            }
            Ok(()) => {}
        }
    }
    Some(allow_to)
}

/// Why the account's own number is never a destination: a text to it comes back to
/// this gateway as a webhook (a loop a hostile agent could drive), and Twilio refuses
/// it anyway (21266). Config messages name no number (they reach the log on reload).
const OWN_NUMBER: &str = "this is the account's own fromNumber, and smsgate never texts its own number (the text would come back to it as a webhook)";

/// `language` and the operator's own `texts`.
fn texts(l: &Layers, p: &mut Problems) -> crate::texts::Texts {
    let (f, path) = l.get("language", |r| &r.language);
    let language = match take(f, &path, "a language code string", p) {
        None => crate::texts::Language::default(),
        Some(s) => crate::texts::Language::parse(s.trim()).unwrap_or_else(|| {
            p.add(
                &path,
                format!("{s:?} has no built-in texts; use \"en\", \"hi\", \"zh\", \"ja\" or \"ko\" (or write your own under texts)"),
            );
            crate::texts::Language::default()
        }),
    };
    let (f, texts_path) = l.get("texts", |r| &r.texts);
    let mut texts = crate::texts::Texts {
        language,
        ..Default::default()
    };
    for (key, template) in take(f, &texts_path, "an object of texts", p)
        .into_iter()
        .flatten()
    {
        let path = format!("{texts_path}.{key}");
        let Some(kind) = crate::texts::Kind::ALL.into_iter().find(|k| k.key() == key) else {
            p.add(
                &path,
                format!("unknown text; the texts are {}", crate::texts::Kind::keys()),
            );
            continue;
        };
        if let Err(e) = crate::texts::validate(kind, template) {
            p.add(&path, e);
            continue;
        }
        texts.set(kind, template.clone());
    }
    texts
}

/// `outboundLimits`: the SMS segment budgets, and `maxHeld` (the cap on held sends).
fn outbound_limits(l: &Layers, p: &mut Problems) -> (crate::limits::OutboundLimits, u32) {
    let (f, limits_path) = l.get("outboundLimits", |r| &r.outbound_limits);
    let mut outbound_limits = crate::limits::OutboundLimits::default();
    let mut max_held = crate::outbound::held::DEFAULT_MAX_HELD;
    for (key, v) in take(f, &limits_path, "an object of limits", p)
        .into_iter()
        .flatten()
    {
        let path = format!("{limits_path}.{key}");
        if key == "maxHeld" {
            if let Some(n) = count(v, &path, "held sends, 0 or more (0 = no cap)", p) {
                max_held = n;
            }
            continue;
        }
        let slot = match key.as_str() {
            "perHour" => &mut outbound_limits.per_hour,
            "perDay" => &mut outbound_limits.per_day,
            "perRecipientPerHour" => &mut outbound_limits.per_recipient_per_hour,
            _ => {
                p.add(&path, "unknown limit; the limits are perHour, perDay and perRecipientPerHour (SMS segments, 0 = no limit), and maxHeld (held sends, 0 = no cap)");
                continue;
            }
        };
        if let Some(n) = count(v, &path, "SMS segments, 0 or more (0 = no limit)", p) {
            *slot = n;
        }
    }
    (outbound_limits, max_held)
}

/// `inboundLimits`: texts a sender may send a minute.
fn inbound_limits(l: &Layers, p: &mut Problems) -> u32 {
    let (f, inbound_path) = l.get("inboundLimits", |r| &r.inbound_limits);
    let mut inbound_per_sender_per_minute = crate::limits::DEFAULT_INBOUND_PER_MINUTE;
    for (key, v) in take(f, &inbound_path, "an object of limits", p)
        .into_iter()
        .flatten()
    {
        let path = format!("{inbound_path}.{key}");
        if key != "perSenderPerMinute" {
            p.add(
                &path,
                "unknown limit; the inbound limit is perSenderPerMinute (0 = no limit)",
            );
            continue;
        }
        if let Some(n) = count(v, &path, "texts a minute, 0 or more (0 = no limit)", p) {
            inbound_per_sender_per_minute = n;
        }
    }
    inbound_per_sender_per_minute
}

/// `apiBaseUrl` and `messagingApiBaseUrl` (tests point them at a local server).
fn api_urls(l: &Layers, p: &mut Problems) -> (Url, Url) {
    let base_url = |key: &str,
                    default: &str,
                    f: &Option<Field<String>>,
                    path: String,
                    p: &mut Problems|
     -> Url {
        let fallback = || Url::parse(default).ok();
        let parsed = take(f, &path, "an http(s) URL string", p).and_then(|s| match Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
            _ => {
                p.add(
                    &path,
                    format!("{s:?} is not an http(s) URL; use e.g. {default:?} ({key})"),
                );
                None
            }
        });
        // Both defaults are constant, valid URLs (documented invariant).
        #[allow(clippy::expect_used)]
        parsed.or_else(fallback).expect("default API URL parses")
    };
    let (f, path) = l.get("apiBaseUrl", |r| &r.api_base_url);
    let api_base_url = base_url("apiBaseUrl", "https://api.twilio.com", f, path, p);
    let (f, path) = l.get("messagingApiBaseUrl", |r| &r.messaging_api_base_url);
    let messaging_api_base_url = base_url(
        "messagingApiBaseUrl",
        "https://messaging.twilio.com",
        f,
        path,
        p,
    );
    (api_base_url, messaging_api_base_url)
}

/// A phone number key: an E.164 string.
fn e164(f: &Option<Field<String>>, path: &str, p: &mut Problems) -> Option<E164> {
    take(f, path, "an E.164 phone number string", p).and_then(|s| match E164::parse(s) {
        Ok(n) => Some(n),
        Err(e) => {
            p.add(path, e.to_string());
            None
        }
    })
}

/// A Twilio SID key: `prefix` followed by 32 letters and digits.
fn sid(
    f: &Option<Field<String>>,
    path: &str,
    prefix: &str,
    what: &str,
    p: &mut Problems,
) -> Option<String> {
    take(f, path, &format!("a string starting with {prefix}"), p).and_then(|s| {
        if s.starts_with(prefix) && s.len() == 34 && s.chars().all(|c| c.is_ascii_alphanumeric()) {
            Some(s.clone())
        } else {
            p.add(path, format!("is not {what}; copy it from the Twilio Console: {prefix} followed by 32 characters"));
            None
        }
    })
}

/// A limit's value: a whole number that fits a u32; `what` says what it counts.
fn count(v: &serde_json::Value, path: &str, what: &str, p: &mut Problems) -> Option<u32> {
    let n = v.as_u64().and_then(|n| u32::try_from(n).ok());
    if n.is_none() {
        p.add(
            path,
            format!("expected a whole number of {what}, found {}", describe(v)),
        );
    }
    n
}

pub(super) fn f_unset<'a, T: 'a>(
    l: &Layers<'a>,
    f: impl Fn(&'a RawAccount) -> &'a Option<Field<T>>,
) -> bool {
    is_unset(l.get("", f).0)
}

pub(super) fn public_url(s: &str, path: &str, p: &mut Problems) -> Option<PublicUrl> {
    match Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {
            if !u.username().is_empty() || u.password().is_some() {
                p.add(path, "must not contain credentials (user:password@); Twilio's signature already authenticates it: remove them");
                return None;
            }
            Some(PublicUrl {
                raw: s.trim().to_string(),
                parsed: u,
            })
        }
        _ => {
            p.add(path, format!("{s:?} is not an absolute http(s) URL; use the exact URL Twilio calls, e.g. \"https://sms.example.com/webhooks/sms\""));
            None
        }
    }
}

#[cfg(test)]
mod account_tests {
    use super::super::{validate_value, Env};
    use super::*;
    use crate::config::{Config, Problem};
    use serde_json::json;
    use serde_json::Value;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const MG: &str = "MG0123456789abcdef0123456789abcdef";

    fn sms(sms: Value) -> Result<Config, Vec<Problem>> {
        let config =
            json!({ "gateway": { "stateDir": "/var/lib/smsgate" }, "channels": { "sms": sms } });
        validate_value(&config, &Env::default()).map_err(|e| e.0)
    }

    fn base() -> serde_json::Map<String, Value> {
        json!({
            "accountSid": AC, "authToken": "tok", "fromNumber": "+15550001111",
            "publicWebhookUrl": "https://sms.example.com/webhooks/sms",
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    fn with_accounts(accounts: Value) -> Value {
        let mut top = base();
        top.insert("accounts".into(), accounts);
        Value::Object(top)
    }

    /// CONTRACT §12: `whatsapp` per account, each key checked with its path; `from`
    /// defaults to the account's sender.
    #[test]
    fn whatsapp_keys_table() {
        let with = |wa: Value| {
            let mut top = base();
            top.insert("whatsapp".into(), wa);
            sms(Value::Object(top))
        };
        let hx = "HX0123456789abcdef0123456789abcdef";
        let ok = |wa: Value| {
            with(wa)
                .unwrap_or_else(|e| panic!("{e:?}"))
                .sms
                .accounts
                .remove(0)
                .whatsapp
        };
        let a = |s: &str| E164::parse_address(s).unwrap();
        assert_eq!(
            ok(json!({"enabled": true})),
            Some(crate::config::WhatsApp {
                sender: Sender::Number(a("whatsapp:+15550001111")),
                reengage: None
            })
        );
        assert_eq!(
            ok(json!({"from": "whatsapp:+14155238886", "templates": {"reengage": hx}})),
            Some(crate::config::WhatsApp {
                sender: Sender::Number(a("whatsapp:+14155238886")),
                reengage: Some(hx.into())
            })
        );
        assert_eq!(
            ok(json!({"from": MG})).map(|w| w.sender),
            Some(Sender::MessagingService(MG.into()))
        );
        assert_eq!(ok(json!({"enabled": false, "from": "+14155238886"})), None);
        assert_eq!(ok(Value::Null), None);
        let cases = [
            (
                json!({"enabled": "yes"}),
                "channels.sms.whatsapp.enabled",
                "true or false",
            ),
            (
                json!({"from": "+1555"}),
                "channels.sms.whatsapp.from",
                "E.164",
            ),
            (
                json!({"from": 5}),
                "channels.sms.whatsapp.from",
                "WhatsApp sender",
            ),
            (
                json!({"templates": {"reengage": "HX1"}}),
                "channels.sms.whatsapp.templates.reengage",
                "Content SID",
            ),
            (
                json!({"templates": {"welcome": hx}}),
                "channels.sms.whatsapp.templates.welcome",
                "unknown template",
            ),
            (
                json!({"templates": []}),
                "channels.sms.whatsapp.templates",
                "object",
            ),
            (
                json!({"form": "+14155238886"}),
                "channels.sms.whatsapp.form",
                "unknown key",
            ),
            (json!("on"), "channels.sms.whatsapp", "object"),
        ];
        for (wa, path, says) in cases {
            let e = with(wa.clone()).expect_err("refused");
            assert!(
                e.iter().any(|p| p.path == path && p.message.contains(says)),
                "{wa}: {e:?}"
            );
        }
        // A named account inherits it.
        let c = sms(with_accounts(json!({"b": {
            "fromNumber": "+15550002222", "webhookPath": "/webhooks/b",
            "publicWebhookUrl": "https://sms.example.com/webhooks/b",
        }})));
        assert!(c.unwrap().sms.accounts.iter().all(|a| a.whatsapp.is_none()));
    }

    /// Issue 9, finding 9: `null` in a named account is "unset": it does not inherit.
    #[test]
    fn null_means_unset_and_stops_inheritance() {
        let c = sms(with_accounts(json!({"mg": {
            "fromNumber": null, "messagingServiceSid": MG,
            "webhookPath": "/webhooks/mg", "publicWebhookUrl": "https://sms.example.com/webhooks/mg",
        }})))
        .unwrap();
        let mg = c.sms.account("mg").unwrap();
        assert_eq!(mg.sender, Sender::MessagingService(MG.into()));
        // Without a sender of its own, the account cannot send (nothing inherited): an
        // error naming the key (CONTRACT §11); a lenient load shows it as inactive.
        let x = with_accounts(json!({"x": {
            "fromNumber": null, "webhookPath": "/webhooks/x",
            "publicWebhookUrl": "https://sms.example.com/webhooks/x",
        }}));
        let e = sms(x.clone()).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "channels.sms.accounts.x");
        assert!(e[0].message.contains("fromNumber"), "{e:?}");
        let c = lenient(x).unwrap();
        assert!(c.sms.account("x").is_none());
        assert!(c
            .sms
            .inactive
            .iter()
            .any(|a| a.id == "x" && a.reason.contains("fromNumber")));
        // null elsewhere is the default, never "expected …, found null".
        let mut top = base();
        for k in [
            "dmPolicy",
            "allowFrom",
            "textChunkLimit",
            "defaultTo",
            "enabled",
            "webhookPath",
        ] {
            top.insert(k.into(), Value::Null);
        }
        let c = sms(Value::Object(top)).unwrap();
        let a = c.sms.account("default").unwrap();
        assert_eq!(a.dm_policy, DmPolicy::Pairing);
        assert_eq!(a.text_chunk_limit, 1500);
        assert_eq!(a.media_max_bytes, 5_000_000);
        assert_eq!(a.webhook_path, "/webhooks/sms");
        // A top-level null sender means there is no default account, so no account.
        let mut top = base();
        top.insert("fromNumber".into(), Value::Null);
        let e = sms(Value::Object(top.clone())).unwrap_err();
        assert_eq!(e[0].path, "channels.sms");
        assert!(
            e[0].message
                .contains("missing fromNumber or messagingServiceSid"),
            "{e:?}"
        );
        assert!(lenient(Value::Object(top)).unwrap().sms.accounts.is_empty());
    }

    fn lenient(sms: Value) -> Result<Config, Vec<Problem>> {
        let config =
            json!({ "gateway": { "stateDir": "/var/lib/smsgate" }, "channels": { "sms": sms } });
        let env = Env {
            tolerate_unresolved_secrets: true,
            ..Env::default()
        };
        validate_value(&config, &env).map_err(|e| e.0)
    }

    /// Issue 24 item 3, issue 20 item 11: a config that cannot send does not validate;
    /// each error names the account's key path and the keys it lacks.
    #[test]
    fn a_config_that_cannot_send_is_an_error() {
        let without = |keys: &[&str]| {
            let mut top = base();
            for k in keys {
                top.insert((*k).into(), Value::Null);
            }
            Value::Object(top)
        };
        let cases: Vec<(Value, Option<(&str, &str)>)> = vec![
            (without(&[]), None),
            (
                without(&["authToken"]),
                Some(("channels.sms", "missing authToken")),
            ),
            (
                without(&["accountSid", "authToken"]),
                Some(("channels.sms", "missing accountSid, authToken")),
            ),
            (
                without(&["fromNumber"]),
                Some(("channels.sms", "missing fromNumber or messagingServiceSid")),
            ),
            (
                json!({}),
                Some((
                    "channels.sms",
                    "missing accountSid, authToken, fromNumber or messagingServiceSid",
                )),
            ),
            (json!({"enabled": false}), None),
            (json!({"enabled": false, "accountSid": AC}), None),
            (
                with_accounts(
                    json!({"b": {"authToken": null, "fromNumber": "+15550002222",
                    "webhookPath": "/webhooks/b", "publicWebhookUrl": "https://sms.example.com/webhooks/b"}}),
                ),
                Some(("channels.sms.accounts.b", "missing authToken")),
            ),
            (
                with_accounts(
                    json!({"b": {"enabled": false, "authToken": null, "webhookPath": "/webhooks/b"}}),
                ),
                None,
            ),
            (
                with_accounts(json!({"default": {"enabled": false}})),
                Some(("channels.sms", "every account has enabled: false")),
            ),
        ];
        for (sms_value, want) in cases {
            match (sms(sms_value.clone()), want) {
                (Ok(_), None) => {}
                (Err(e), Some((path, needle))) => {
                    assert_eq!(e.len(), 1, "{sms_value}: {e:?}");
                    assert_eq!(e[0].path, path, "{sms_value}");
                    assert!(e[0].message.contains(needle), "{sms_value}: {e:?}");
                    assert!(!e[0].message.contains("tok"), "no token: {e:?}");
                    // Commands that never send still load it.
                    assert!(lenient(sms_value.clone()).is_ok(), "{sms_value}");
                }
                (got, want) => panic!("{sms_value}: {got:?}, wanted {want:?}"),
            }
        }
    }

    /// Issue 24 item 3: a misspelt key names the nearest key valid at its level.
    #[test]
    fn unknown_keys_suggest_the_nearest_known_key() {
        let mut top = base();
        top.insert("alowFrom".into(), json!(["+15557654321"]));
        top.insert(
            "accounts".into(),
            json!({"b": {"webhookpath": "/webhooks/b"}}),
        );
        top.insert("zzzz".into(), json!(1));
        let e = sms(Value::Object(top)).unwrap_err();
        let find = |path: &str| {
            e.iter()
                .find(|p| p.path == path)
                .map(|p| p.message.clone())
                .unwrap_or_else(|| panic!("{path} not in {e:?}"))
        };
        assert!(find("channels.sms.alowFrom").contains("did you mean `allowFrom`?"));
        assert!(find("channels.sms.accounts.b.webhookpath").contains("did you mean `webhookPath`?"));
        let m = find("channels.sms.zzzz");
        assert!(
            m.starts_with("unknown key") && !m.contains("did you mean"),
            "{m}"
        );
    }

    /// Issue 22 item 1: `allowTo` and every number key are checked entry by entry, with
    /// the key path and the fix; short codes and partial numbers are refused everywhere;
    /// the account's own number is no destination.
    #[test]
    fn allow_to_and_destinations_are_validated() {
        let with = |pairs: Value| {
            let mut top = base();
            for (k, v) in pairs.as_object().cloned().unwrap_or_default() {
                top.insert(k, v);
            }
            Value::Object(top)
        };
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (
                with(json!({"allowTo": ["+15557654321", "+44*", "*"]})),
                vec![],
            ),
            (with(json!({"allowTo": []})), vec![]),
            (
                with(json!({"allowTo": ["+1555", "12345", "44*", "+*", "+4*4", "+15557654321"]})),
                vec![
                    ("channels.sms.allowTo[0]", "only 4 digits"),
                    ("channels.sms.allowTo[1]", "short code"),
                    ("channels.sms.allowTo[2]", "prefix pattern"),
                    ("channels.sms.allowTo[3]", "prefix pattern"),
                    ("channels.sms.allowTo[4]", "E.164"),
                ],
            ),
            (
                with(json!({"allowTo": "+15557654321"})),
                vec![("channels.sms.allowTo", "a list of E.164 numbers")],
            ),
            (
                with(json!({"allowTo": [5]})),
                vec![("channels.sms.allowTo", "a list of E.164 numbers")],
            ),
            (
                with(json!({"allowTo": ["sms:+15550001111"]})),
                vec![("channels.sms.allowTo[0]", "own fromNumber")],
            ),
            (
                with(json!({"defaultTo": "+1555"})),
                vec![("channels.sms.defaultTo", "only 4 digits")],
            ),
            (
                with(json!({"defaultTo": "12345"})),
                vec![("channels.sms.defaultTo", "short code")],
            ),
            (
                with(json!({"defaultTo": "+15550001111"})),
                vec![("channels.sms.defaultTo", "own fromNumber")],
            ),
            (
                with(json!({"allowFrom": ["+15557654321", "12345"]})),
                vec![("channels.sms.allowFrom[1]", "short code")],
            ),
            (
                with(json!({"fromNumber": "+1555000"})),
                vec![("channels.sms.fromNumber", "only 7 digits")],
            ),
            (with(json!({"mediaMaxMb": 2.5})), vec![]),
            (
                with(json!({"mediaMaxMb": 6})),
                vec![("channels.sms.mediaMaxMb", "at most 5 MB")],
            ),
            (
                with(json!({"mediaMaxMb": 0})),
                vec![("channels.sms.mediaMaxMb", "out of range")],
            ),
            (
                with(json!({"mediaMaxMb": "5MB"})),
                vec![("channels.sms.mediaMaxMb", "a number of MB")],
            ),
            (
                with_accounts(
                    json!({"b": {"fromNumber": "+15550002222", "webhookPath": "/webhooks/b",
                    "publicWebhookUrl": "https://sms.example.com/webhooks/b", "allowTo": ["+15550002222", "+1555*"]}}),
                ),
                vec![("channels.sms.accounts.b.allowTo[0]", "own fromNumber")],
            ),
        ];
        for (sms_value, want) in cases {
            match sms(sms_value.clone()) {
                Ok(_) if want.is_empty() => {}
                Err(e) => {
                    let got: Vec<&str> = e.iter().map(|p| p.path.as_str()).collect();
                    let paths: Vec<&str> = want.iter().map(|(p, _)| *p).collect();
                    assert_eq!(got, paths, "{sms_value}: {e:?}");
                    for (problem, (_, needle)) in e.iter().zip(&want) {
                        assert!(problem.message.contains(needle), "{sms_value}: {problem:?}");
                        assert!(
                            !problem.message.contains("+15550001111")
                                && !problem.message.contains("+15550002222"),
                            "no own number in the message: {problem:?}"
                        );
                    }
                }
                Ok(_) => panic!("{sms_value}: validated, wanted {want:?}"),
            }
        }
        // Inherited: a named account without allowTo of its own takes the top level's.
        let c = sms(with_accounts(
            json!({"b": {"fromNumber": "+15550002222", "webhookPath": "/webhooks/b",
            "publicWebhookUrl": "https://sms.example.com/webhooks/b"}}),
        )
        .as_object()
        .map(|o| {
            let mut o = o.clone();
            o.insert("allowTo".into(), json!(["+44*"]));
            Value::Object(o)
        })
        .unwrap_or_default())
        .unwrap();
        let b = c.sms.account("b").unwrap();
        assert!(b.allow_to.as_ref().unwrap().prefixes.contains("+44"));
        let d = c.sms.account("default").unwrap();
        assert!(d.allow_to.is_some());
        // Unset is None (the known people); null stops inheriting.
        let c = sms(with_accounts(
            json!({"b": {"fromNumber": "+15550002222", "webhookPath": "/webhooks/b",
            "publicWebhookUrl": "https://sms.example.com/webhooks/b", "allowTo": null}}),
        ))
        .unwrap();
        assert!(c.sms.account("b").unwrap().allow_to.is_none());
        // A set allowTo that leaves out defaultTo: a warning naming both keys.
        let c = sms(with(
            json!({"allowTo": ["+44*"], "defaultTo": "+15557654321"}),
        ))
        .unwrap();
        let w = c.warnings.join("\n");
        assert!(w.contains("allowTo does not include defaultTo"), "{w}");
        assert!(!w.contains("+15557654321"), "no number in the warning: {w}");
        let c = sms(with(
            json!({"allowTo": ["+1555*"], "defaultTo": "+15557654321"}),
        ))
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    /// Issue 24 item 3: public URLs Twilio cannot use as written are warned about.
    #[test]
    fn public_url_problems_are_warnings() {
        let mut top = base();
        top.insert(
            "publicWebhookUrl".into(),
            json!("http://127.0.0.1:8789/webhooks/sms/"),
        );
        let c = sms(Value::Object(top)).unwrap();
        let w = c.warnings.join("\n");
        assert!(
            w.contains("loopback") && w.contains("is http") && w.contains("ends in `/`"),
            "{w}"
        );
        assert!(sms(Value::Object(base())).unwrap().warnings.is_empty());
    }

    /// Issue 9, finding 9: no two accounts share a sender or a public URL; both key
    /// paths are named.
    #[test]
    fn shared_senders_and_urls_are_refused() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (
                // Inherits the top level's number next to the default account.
                json!({"support": {"webhookPath": "/webhooks/support", "publicWebhookUrl": "https://sms.example.com/webhooks/support"}}),
                vec!["channels.sms.accounts.support.fromNumber"],
            ),
            (
                json!({"support": {"fromNumber": "+15550002222", "webhookPath": "/webhooks/support"}}),
                vec!["channels.sms.accounts.support.publicWebhookUrl"],
            ),
            (
                // The same URL written with the default port is the same URL.
                json!({"support": {"fromNumber": "+15550002222", "webhookPath": "/webhooks/support",
                    "publicWebhookUrl": "https://SMS.example.com:443/webhooks/sms#rc=2"}}),
                vec!["channels.sms.accounts.support.publicWebhookUrl"],
            ),
            (
                json!({
                    "a": {"fromNumber": null, "messagingServiceSid": MG, "webhookPath": "/a", "publicWebhookUrl": "https://sms.example.com/a"},
                    "b": {"fromNumber": null, "messagingServiceSid": MG, "webhookPath": "/b", "publicWebhookUrl": "https://sms.example.com/b"},
                }),
                vec!["channels.sms.accounts.b.messagingServiceSid"],
            ),
            (
                json!({"support": {"fromNumber": "+15550002222", "webhookPath": "/webhooks/support",
                    "publicWebhookUrl": "https://sms.example.com/webhooks/support"}}),
                vec![],
            ),
        ];
        for (accounts, want) in cases {
            let got = sms(with_accounts(accounts.clone()));
            match (got, want.is_empty()) {
                (Ok(_), true) => {}
                (Err(problems), false) => {
                    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
                    assert_eq!(paths, want, "{accounts}");
                    let m = &problems[0].message;
                    assert!(
                        m.contains("account \"") && m.contains("channels.sms."),
                        "{m}"
                    );
                    assert!(!m.contains("+1555"), "no phone number in the message: {m}");
                }
                (got, _) => panic!("{accounts}: {got:?}"),
            }
        }
    }
}
