//! The admin operations themselves, on a store and a config. The daemon runs them
//! behind its socket; the CLI runs them directly when no daemon is running.

use serde_json::{json, Value};

use super::{Request, Response};
use crate::config::Config;
use crate::phone::E164;
use crate::store::{now_ms, OutboundRecord, OutboundState, Store, StoreError};

/// RFC 3339 UTC time for a millisecond timestamp.
pub(crate) fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What happened, for the daemon to act on (e.g. wake the sender).
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub queued_sms: bool,
    pub requeued_message: bool,
}

pub(crate) fn execute(store: &Store, config: &Config, req: &Request) -> (Response, Outcome) {
    let mut outcome = Outcome::default();
    let resp = match run(store, config, req, &mut outcome) {
        Ok(v) => Response::ok(v),
        Err(e) => Response::err(e),
    };
    (resp, outcome)
}

fn run(
    store: &Store,
    config: &Config,
    req: &Request,
    outcome: &mut Outcome,
) -> Result<Value, String> {
    let now = now_ms();
    let store_err = |e: crate::store::StoreError| e.to_string();
    match req {
        Request::Ping => Ok(json!({"pong": true})),
        Request::PairingList => {
            let list = store.pending_pairings(now).map_err(store_err)?;
            Ok(Value::Array(
                list.iter()
                    .map(|r| {
                        json!({
                            "code": r.code,
                            "sender": r.sender.as_str(),
                            "account": r.account,
                            "createdAt": rfc3339(r.created_at_ms),
                            "expiresAt": rfc3339(r.expires_at_ms),
                        })
                    })
                    .collect(),
            ))
        }
        Request::PairingApprove { code } => {
            let opted_out_before = |r: &crate::access::PairingRequest| {
                store.is_opted_out(&r.account, &r.sender).unwrap_or(false)
            };
            // The approved text in the language of the account that paired.
            let notice = |account: &str| {
                config.sms.account(account).map_or_else(
                    || crate::texts::Texts::default().approved(),
                    |a| a.texts.approved(),
                )
            };
            match store.approve_pairing(code, now, notice).map_err(store_err)? {
                Some(r) => {
                    store.flush().map_err(store_err)?;
                    let texted = !opted_out_before(&r);
                    outcome.queued_sms = texted;
                    tracing::info!(account = %r.account, sender = %r.sender.redacted(), code = %r.code, "pairing approved");
                    Ok(json!({"code": r.code, "sender": r.sender.as_str(), "account": r.account, "texted": texted}))
                }
                None => Err(format!("no pending pairing request with code {:?} (codes expire after 1 hour; see `smsgate pairing list`)", code.trim())),
            }
        }
        Request::PairingReject { code } => {
            match store.reject_pairing(code, now).map_err(store_err)? {
                Some(r) => {
                    store.flush().map_err(store_err)?;
                    tracing::info!(account = %r.account, sender = %r.sender.redacted(), code = %r.code, "pairing rejected");
                    Ok(json!({"code": r.code, "sender": r.sender.as_str(), "account": r.account}))
                }
                None => Err(format!(
                    "no pending pairing request with code {:?} (see `smsgate pairing list`)",
                    code.trim()
                )),
            }
        }
        Request::SendersList { account } => {
            if let Some(a) = account {
                known_account(config, a)?;
            }
            let list = store
                .approved_senders(account.as_deref())
                .map_err(store_err)?;
            Ok(Value::Array(
                list.iter()
                    .map(|s| json!({"sender": s.number.as_str(), "account": s.account, "approvedAt": rfc3339(s.approved_at_ms)}))
                    .collect(),
            ))
        }
        Request::QueueList => queue_list(store).map_err(store_err),
        Request::ApprovalsList => {
            let ask = |r: &crate::store::AskRecord| {
                json!({
                    "code": r.code,
                    "account": r.account,
                    "ref": r.reference,
                    "conversation": r.conversation,
                    "title": r.title,
                    "detail": r.detail,
                    "createdAt": rfc3339(r.created_at_ms),
                    "expiresAt": rfc3339(r.expires_at_ms),
                    "decision": r.decision,
                    "by": r.by,
                    "decidedAt": r.decided_at_ms.map(rfc3339),
                    "reason": r.reason,
                })
            };
            let pending = store.pending_asks(None).map_err(store_err)?;
            let decided = store.decided_asks(None).map_err(store_err)?;
            Ok(json!({
                "pending": pending.iter().map(ask).collect::<Vec<_>>(),
                "decided": decided.iter().map(ask).collect::<Vec<_>>(),
            }))
        }
        Request::Status => Ok(json!({
            "running": false,
            "spool": store.spool_len(),
            "agentQueue": store.inbox_len(),
            "outbound": store.outbound_len(),
            "deadLetters": store.dead_len(),
        })),
        Request::Reload => Err("reload needs the running daemon".into()),
        Request::QueueRequeue { id } => queue_requeue(store, id.trim(), now, outcome),
        Request::QueueRelease { id } => queue_release(store, id.as_deref(), now, outcome),
        Request::QueuePurge { id } => queue_purge(store, id.trim()),
        Request::MessageSend { .. } => {
            Err("message send goes through the running daemon or straight to Twilio".into())
        }
        Request::SendersRevoke { account, number } => {
            let number = E164::parse_address(number).map_err(|e| e.to_string())?;
            let account = match account {
                Some(a) => {
                    known_account(config, a)?;
                    a.clone()
                }
                None => config
                    .sms
                    .default_account
                    .clone()
                    .ok_or("no account is configured")?,
            };
            if store.revoke_sender(&account, &number).map_err(store_err)? {
                store.flush().map_err(store_err)?;
                tracing::info!(%account, sender = %number.redacted(), "approval revoked");
                Ok(json!({"sender": number.as_str(), "account": account, "revoked": true}))
            } else {
                Err(format!("{number} is not an approved sender of account {account:?} (see `smsgate senders list`)"))
            }
        }
    }
}

fn queue_list(store: &Store) -> Result<Value, StoreError> {
    let mut out = Vec::new();
    for d in store.dead_letters()? {
        let m = &d.message;
        // `agent-failed`: the agent said it could not handle it (CONTRACT §11);
        // `dead`: no agent acknowledged it within gateway.agentQueueMaxAge.
        let state = if d.agent_failed {
            "agent-failed"
        } else {
            "dead"
        };
        out.push(json!({
            "id": m.id, "kind": "deadLetter", "state": state, "account": m.account,
            "from": m.from.as_str(), "text": m.text,
            "receivedAt": rfc3339(m.received_at_ms), "deadAt": rfc3339(d.dead_at_ms),
            "error": m.failures.last_error, "attempts": m.failures.count,
        }));
    }
    // Texts still waiting for an agent (not acknowledged yet): `attempts` counts the
    // deliveries the agent failed (`fail` lines); `nextAttempt` is when a failed one
    // goes again.
    let now = now_ms();
    for (_, m) in store.inbox()? {
        let f = &m.failures;
        out.push(json!({
            "id": m.id, "kind": "message", "state": "waiting", "account": m.account,
            "from": m.from.as_str(), "text": m.text,
            "receivedAt": rfc3339(m.received_at_ms),
            "ageSecs": now.saturating_sub(m.received_at_ms) / 1000,
            "attempts": f.count, "error": f.last_error,
            "nextAttempt": (f.retry_at_ms > now).then(|| rfc3339(f.retry_at_ms)),
        }));
    }
    for r in store.outbound()? {
        let state = match r.state {
            OutboundState::Unknown => "unknown",
            OutboundState::Checking => "checking",
            OutboundState::Failed => "failed",
            OutboundState::Held => "held",
            OutboundState::Queued | OutboundState::Sending if r.resent => "resent",
            OutboundState::Queued | OutboundState::Sending => continue,
        };
        let next_check = matches!(r.state, OutboundState::Unknown | OutboundState::Checking)
            .then(|| rfc3339(r.next_attempt_ms));
        out.push(json!({
            "id": r.id.to_string(), "kind": "send", "state": state, "account": r.account,
            "to": r.to.as_str(), "text": r.body, "error": r.last_error, "attempts": r.attempts,
            "createdAt": rfc3339(r.created_ms), "code": r.last_code,
            "hint": crate::twilio::hints::sentence(r.last_code), "nextCheck": next_check,
            "limit": r.held_limit,
            "releaseAt": (r.state == OutboundState::Held && r.next_attempt_ms != u64::MAX)
                .then(|| rfc3339(r.next_attempt_ms)),
        }));
    }
    // Texts held outside WhatsApp's 24-hour window (CONTRACT §12): they go when the
    // person writes again, by themselves.
    for r in store.whatsapp_held_all()? {
        out.push(json!({
            "id": r.id.to_string(), "kind": "send", "state": "awaiting-reply", "account": r.account,
            "to": r.to.as_str(), "text": r.body, "error": r.last_error, "attempts": r.attempts,
            "createdAt": rfc3339(r.created_ms), "code": null, "hint": null, "nextCheck": null,
            "limit": null, "releaseAt": null,
        }));
    }
    Ok(Value::Array(out))
}

fn outbound_by_id(store: &Store, id: &str) -> Result<Option<OutboundRecord>, StoreError> {
    let Ok(n) = id.parse::<u64>() else {
        return Ok(None);
    };
    Ok(store.outbound()?.into_iter().find(|r| {
        r.id == n
            && matches!(
                r.state,
                OutboundState::Unknown
                    | OutboundState::Checking
                    | OutboundState::Failed
                    | OutboundState::Held
            )
    }))
}

fn queue_requeue(
    store: &Store,
    id: &str,
    now: u64,
    outcome: &mut Outcome,
) -> Result<Value, String> {
    let e = |e: StoreError| e.to_string();
    if let Some(mut r) = outbound_by_id(store, id).map_err(e)? {
        r.state = OutboundState::Queued;
        r.attempts = 0;
        r.next_attempt_ms = now;
        r.last_error = None;
        store.put_outbound(&r).map_err(e)?;
        store.flush().map_err(e)?;
        outcome.queued_sms = true;
        return Ok(json!({"id": id, "kind": "send", "requeued": true}));
    }
    if store.requeue_dead(id, now).map_err(e)? {
        store.flush().map_err(e)?;
        outcome.requeued_message = true;
        return Ok(json!({"id": id, "kind": "deadLetter", "requeued": true}));
    }
    Err(format!(
        "nothing in the queue has id {id:?} (see `smsgate queue list`)"
    ))
}

/// Lets held sends go, over the limits: the operator decided.
fn queue_release(
    store: &Store,
    id: Option<&str>,
    now: u64,
    outcome: &mut Outcome,
) -> Result<Value, String> {
    let e = |e: StoreError| e.to_string();
    let mut released = Vec::new();
    for mut r in store.outbound().map_err(e)? {
        let wanted = id.is_none_or(|id| id.trim() == r.id.to_string());
        if r.state != OutboundState::Held || !wanted {
            continue;
        }
        r.state = OutboundState::Queued;
        r.released = true;
        r.held_limit = None;
        r.next_attempt_ms = now;
        store.put_outbound(&r).map_err(e)?;
        released.push(r.id.to_string());
    }
    if released.is_empty() {
        return Err(match id {
            Some(id) => format!("no held send has id {id:?} (see `smsgate queue list`)"),
            None => "no send is held".to_string(),
        });
    }
    store.flush().map_err(e)?;
    outcome.queued_sms = true;
    Ok(json!({"released": released}))
}

fn queue_purge(store: &Store, id: &str) -> Result<Value, String> {
    let e = |e: StoreError| e.to_string();
    if let Some(r) = outbound_by_id(store, id).map_err(e)? {
        store.remove_outbound(r.id).map_err(e)?;
        store.flush().map_err(e)?;
        return Ok(json!({"id": id, "kind": "send", "purged": true}));
    }
    if store.purge_dead(id).map_err(e)?.is_some() {
        store.flush().map_err(e)?;
        return Ok(json!({"id": id, "kind": "deadLetter", "purged": true}));
    }
    Err(format!(
        "nothing in the queue has id {id:?} (see `smsgate queue list`)"
    ))
}

fn known_account(config: &Config, id: &str) -> Result<(), String> {
    let known = config
        .sms
        .accounts
        .iter()
        .map(|a| a.id.as_str())
        .chain(config.sms.inactive.iter().map(|a| a.id.as_str()));
    if known.clone().any(|k| k == id) {
        Ok(())
    } else {
        Err(format!(
            "no account {id:?}; configured accounts: {}",
            known.collect::<Vec<_>>().join(", ")
        ))
    }
}
