//! The resolved configuration as operators see it (`config show`): defaults filled in,
//! environment fallbacks applied, secrets replaced by `***`.

use serde_json::{json, Map, Value};

use super::{Account, Config, InboundCheck, LogFormat, Sender};

/// The resolved config as JSON, secrets redacted.
pub(crate) fn redacted(config: &Config) -> Value {
    let g = &config.gateway;
    let mut accounts = Map::new();
    for a in &config.sms.accounts {
        accounts.insert(a.id.clone(), account(a));
    }
    for a in &config.sms.inactive {
        accounts.insert(
            a.id.clone(),
            json!({ "usable": false, "reason": a.reason, "webhookPath": a.webhook_path }),
        );
    }
    json!({
        "gateway": {
            "listen": g.listen.to_string(),
            "tls": match (&g.tls, &g.acme) {
                (Some(t), _) => json!({
                    "certFile": t.cert_file.display().to_string(),
                    "keyFile": t.key_file.display().to_string(),
                }),
                (None, Some(a)) => json!({ "acme": {
                    "domains": a.domains,
                    "email": a.email,
                    "directoryUrl": a.directory_url.as_str(),
                    "http01Listen": a.http01_listen.map(|l| l.to_string()),
                    "directoryCaFile": a.directory_ca_file.as_ref().map(|f| f.display().to_string()),
                } }),
                (None, None) => Value::Null,
            },
            "stateDir": g.state_dir.display().to_string(),
            "agentSocket": g.agent_socket.display().to_string(),
            "adminSocket": g.admin_socket.display().to_string(),
            "maxConnections": g.max_connections,
            "trustedProxies": g.trusted_proxies.nets().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "agentQueueMaxAge": format!("{}s", g.agent_queue_max_age.as_secs()),
            "log": {
                "level": g.log.level,
                "format": match g.log.format { LogFormat::Text => "text", LogFormat::Json => "json" },
            },
        },
        "channels": { "sms": {
            "enabled": config.sms.enabled,
            "defaultAccount": config.sms.default_account,
            "accounts": accounts,
        }},
    })
}

fn account(a: &Account) -> Value {
    let (from, service) = match &a.sender {
        Sender::Number(n) => (Some(n.to_string()), None),
        Sender::MessagingService(s) => (None, Some(s.clone())),
    };
    let allow = a.allow_from.entries();
    json!({
        "usable": true,
        "accountSid": a.account_sid,
        "authToken": "***",
        "fromNumber": from,
        "messagingServiceSid": service,
        "publicWebhookUrl": a.public_url().map(|u| u.raw.clone()),
        "webhookPath": a.webhook_path,
        "dmPolicy": a.dm_policy.as_str(),
        "allowFrom": allow,
        "defaultTo": a.default_to.as_ref().map(ToString::to_string),
        // null: unset, the people known to the account (CONTRACT §9).
        "allowTo": a.allow_to.as_ref().map(|t| {
            let mut list: Vec<String> = Vec::new();
            if t.anyone {
                list.push("*".into());
            }
            list.extend(t.numbers.iter().map(ToString::to_string));
            list.extend(t.prefixes.iter().map(|p| format!("{p}*")));
            list
        }),
        "execApprovals": {
            "enabled": match a.exec_approvals.enabled { None => json!("auto"), Some(b) => json!(b) },
            "active": a.exec_approvals.active(),
            "approvers": a.exec_approvals.approvers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "timeoutSecs": a.exec_approvals.timeout_secs,
        },
        "textChunkLimit": a.text_chunk_limit,
        "mediaMaxMb": a.media_max_bytes as f64 / 1e6,
        "language": a.texts.language.code(),
        "outboundLimits": {
            "perHour": a.outbound_limits.per_hour,
            "perDay": a.outbound_limits.per_day,
            "perRecipientPerHour": a.outbound_limits.per_recipient_per_hour,
            "maxHeld": a.max_held,
        },
        "releaseHeld": if a.release_held_auto { "auto" } else { "manual" },
        "inboundLimits": { "perSenderPerMinute": a.inbound_per_sender_per_minute },
        // What each text costs: Hindi, Chinese, Japanese and Korean are UCS-2 (70
        // characters a segment), so a text twice as short can cost twice as much.
        "texts": a.texts.costs().into_iter().map(|(key, encoding, chars, segments)| {
            (key.to_string(), serde_json::json!({
                "text": a.texts.template(crate::texts::Kind::ALL.into_iter().find(|k| k.key() == key).unwrap_or(crate::texts::Kind::Approved)),
                "encoding": encoding, "characters": chars, "segments": segments,
            }))
        }).collect::<serde_json::Map<String, serde_json::Value>>(),
        "dangerouslyDisableSignatureValidation": matches!(a.inbound, InboundCheck::Unsigned { .. }),
        "apiBaseUrl": a.api_base_url.as_str(),
        "messagingApiBaseUrl": a.messaging_api_base_url.as_str(),
        // null: WhatsApp is off for this account (CONTRACT §12).
        "whatsapp": a.whatsapp.as_ref().map(|w| json!({
            "enabled": true,
            "from": match &w.sender { Sender::Number(n) => Some(n.number().to_string()), Sender::MessagingService(_) => None },
            "messagingServiceSid": match &w.sender { Sender::MessagingService(s) => Some(s.clone()), Sender::Number(_) => None },
            "templates": { "reengage": w.reengage },
        })),
    })
}

/// The same view as indented `key: value` lines for people.
pub(crate) fn text(value: &Value) -> String {
    let mut out = String::new();
    write_text(value, 0, &mut out);
    out
}

fn write_text(value: &Value, depth: usize, out: &mut String) {
    let Value::Object(map) = value else { return };
    for (k, v) in map {
        let pad = "  ".repeat(depth);
        match v {
            Value::Object(_) => {
                out.push_str(&format!("{pad}{k}:\n"));
                write_text(v, depth + 1, out);
            }
            Value::Null => out.push_str(&format!("{pad}{k}: (unset)\n")),
            Value::String(s) => out.push_str(&format!("{pad}{k}: {s}\n")),
            other => out.push_str(&format!("{pad}{k}: {other}\n")),
        }
    }
}
