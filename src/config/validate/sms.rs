//! `channels.sms`: which accounts exist, their layers (named account, top level,
//! environment), and the checks across accounts (paths, senders, URLs, "can send").

use std::collections::BTreeMap;

use super::super::raw::{is_unset, Field, RawAccount, RawConfig};
use super::super::{Account, InactiveAccount, Sender, SmsChannel};
use super::account::{account, Resolved};
use super::env::env_layer;
use super::errors::{take, Problems};
use super::layers::{Layer, Layers, Origin};
use super::{Env, SMS};

pub(super) fn sms_channel(raw: &RawConfig, env: &Env, p: &mut Problems) -> SmsChannel {
    let empty = RawAccount::default();
    let top = raw
        .channels
        .as_ref()
        .and_then(|c| c.sms.as_ref())
        .unwrap_or(&empty);
    let env_raw = env_layer(env);
    let enabled = take(&top.enabled, "channels.sms.enabled", "true or false", p)
        .copied()
        .unwrap_or(true);

    let named = top.accounts.clone().unwrap_or_default();
    let has_sender =
        |r: &RawAccount| !is_unset(&r.from_number) || !is_unset(&r.messaging_service_sid);
    let mut ids: Vec<String> = Vec::new();
    if has_sender(top) || has_sender(&env_raw) || named.contains_key("default") {
        ids.push("default".into());
    }
    for id in named.keys() {
        if id != "default" {
            ids.push(id.clone());
        }
        let valid_id = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_id {
            p.add(
                format!("{SMS}.accounts.{id}"),
                "account ids use letters, digits, - and _ only; rename it",
            );
        }
    }

    let mut accounts = Vec::new();
    let mut inactive = Vec::new();
    let mut unusable = Vec::new();
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    let mut unique: BTreeMap<String, (String, String)> = BTreeMap::new();
    for id in &ids {
        let mut layers = Vec::new();
        if let Some(r) = named.get(id) {
            for (key, set) in [
                ("accounts", r.accounts.is_some()),
                ("defaultAccount", r.default_account.is_some()),
            ] {
                if set {
                    p.add(
                        format!("{SMS}.accounts.{id}.{key}"),
                        format!("only allowed directly under {SMS}; move it there"),
                    );
                }
            }
            layers.push(Layer {
                raw: r,
                origin: Origin::Named(id.clone()),
            });
        }
        layers.push(Layer {
            raw: top,
            origin: Origin::Top,
        });
        if id == "default" {
            layers.push(Layer {
                raw: &env_raw,
                origin: Origin::Env,
            });
        }
        let layers = Layers { layers, env };
        match account(id, &layers, p) {
            Resolved::Usable(a) => {
                check_path(&mut paths, id, &a.webhook_path, &layers, p);
                check_unique(&mut unique, &a, &layers, p);
                accounts.push(*a);
            }
            Resolved::Inactive(a, why) => {
                check_path(&mut paths, id, &a.webhook_path, &layers, p);
                let path = if named.contains_key(id) {
                    format!("{SMS}.accounts.{id}")
                } else {
                    SMS.to_string()
                };
                unusable.push((path, why));
                inactive.push(a);
            }
        }
    }
    // No account at all (no sender anywhere yet): the keys set directly under
    // channels.sms are still checked, so a wrong value is listed with the missing ones
    // ("exit 1 listing every problem"), not only once the sender is filled in. The
    // result is dropped: only its problems count.
    if !ids.iter().any(|id| id == "default") {
        let layers = Layers {
            layers: vec![
                Layer {
                    raw: top,
                    origin: Origin::Top,
                },
                Layer {
                    raw: &env_raw,
                    origin: Origin::Env,
                },
            ],
            env,
        };
        let _ = account("default", &layers, p);
    }
    // A config that validates must be able to send (CONTRACT §11); commands that never
    // send (pairing, status) still load one that cannot, to say why.
    if !env.tolerate_unresolved_secrets {
        let top_missing = top_level_missing(top, &env_raw);
        for (path, message) in
            crate::config::checks::cannot_send(enabled, accounts.len(), &unusable, &top_missing)
        {
            p.add(path, message);
        }
    }

    let default_account = match take(
        &top.default_account,
        "channels.sms.defaultAccount",
        "an account id",
        p,
    ) {
        Some(id) => {
            if !ids.contains(id) {
                p.add(
                    "channels.sms.defaultAccount",
                    format!(
                        "names {id:?}, which is not an account; use one of: {}",
                        ids.join(", ")
                    ),
                );
            }
            Some(id.clone())
        }
        None => accounts
            .iter()
            .find(|a| a.id == "default")
            .or_else(|| accounts.first())
            .map(|a| a.id.clone()),
    };
    if !enabled {
        inactive.extend(accounts.drain(..).map(|a| InactiveAccount {
            id: a.id,
            webhook_path: a.webhook_path,
            reason: "channels.sms.enabled is false".into(),
        }));
    }
    SmsChannel {
        enabled,
        accounts,
        inactive,
        default_account,
    }
}

fn check_path(
    paths: &mut BTreeMap<String, String>,
    id: &str,
    path: &str,
    layers: &Layers,
    p: &mut Problems,
) {
    if let Some(other) = paths.insert(path.to_string(), id.to_string()) {
        let (_, key_path) = layers.get("webhookPath", |r| &r.webhook_path);
        let key_path = if key_path.contains(".accounts.") {
            key_path
        } else {
            format!("{SMS}.accounts.{id}.webhookPath")
        };
        p.add(key_path, format!("{path:?} is also the webhook path of account {other:?}; every account needs its own, e.g. \"/webhooks/sms/{id}\""));
    }
}

/// Two usable accounts may not share a sender or a public webhook URL: with one URL
/// (and one token) a webhook signed for one account's path passes on the other's, under
/// the other's policy. Both key paths are named; the values are not (they are phone
/// numbers, which error messages that reach the log must not carry).
fn check_unique(
    seen: &mut BTreeMap<String, (String, String)>,
    a: &Account,
    layers: &Layers,
    p: &mut Problems,
) {
    let own_path = |key: &str, from: String| {
        if from.contains(".accounts.") || a.id == "default" {
            from
        } else {
            // Inherited from the top level: the fix goes into this account.
            format!("{SMS}.accounts.{}.{key}", a.id)
        }
    };
    let (key, what, value) = match &a.sender {
        Sender::Number(n) => ("fromNumber", "sender number", format!("number {n}")),
        Sender::MessagingService(mg) => (
            "messagingServiceSid",
            "Messaging Service",
            format!("service {mg}"),
        ),
    };
    let from = match key {
        "fromNumber" => layers.get(key, |r| &r.from_number).1,
        _ => layers.get(key, |r| &r.messaging_service_sid).1,
    };
    let mut entries = vec![(value, own_path(key, from), what, key)];
    if let Some(url) = a.public_url() {
        let mut u = url.parsed.clone();
        u.set_fragment(None);
        let from = layers.get("publicWebhookUrl", |r| &r.public_webhook_url).1;
        entries.push((
            format!("url {u}"),
            own_path("publicWebhookUrl", from),
            "publicWebhookUrl",
            "publicWebhookUrl",
        ));
    }
    for (value, path, what, key) in entries {
        match seen.get(&value) {
            Some((other, other_path)) => p.add(
                path.clone(),
                format!("is the same {what} as account {other:?} has ({other_path}); two accounts cannot share one, or a webhook for one would be accepted as the other's: give account {:?} its own {key}", a.id),
            ),
            None => {
                seen.insert(value, (a.id.clone(), path));
            }
        }
    }
}

/// The sending keys that neither the top level of `channels.sms` nor the environment
/// sets (for the message when no account exists at all).
fn top_level_missing(top: &RawAccount, env_raw: &RawAccount) -> Vec<&'static str> {
    let unset = |f: fn(&RawAccount) -> bool| f(top) && f(env_raw);
    let mut missing = Vec::new();
    if unset(|r| is_unset(&r.account_sid)) {
        missing.push("accountSid");
    }
    if unset(|r| is_unset(&r.auth_token)) {
        missing.push("authToken");
    }
    if unset(|r| is_unset(&r.from_number) && is_unset(&r.messaging_service_sid)) {
        missing.push("fromNumber or messagingServiceSid");
    }
    let unsigned = matches!(
        top.dangerously_disable_signature_validation,
        Some(Field::Ok(true))
    );
    if !unsigned && unset(|r| is_unset(&r.public_webhook_url)) {
        missing.push("publicWebhookUrl");
    }
    missing
}
