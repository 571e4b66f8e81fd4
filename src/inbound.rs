//! Processing admitted webhooks, oldest first: opt-out keywords, the access decision,
//! pairing requests, and forwarding to the agent inbox. The decision is
//! [`crate::access::plan`]; this module gathers its facts and applies its outcome in
//! one store transaction.

use std::sync::Arc;
use std::time::Duration;

use crate::access::{self, budget, new_code, PairingRequest, Plan, PAIRING_TTL_MS};
use crate::config::Config;
use crate::daemon::{App, Shutdown};
use crate::phone::E164;
use crate::store::{
    now_ms, AgentMessage, Effects, InboundRecord, Media, Purpose, Store, StoreError,
};

pub fn pairing_code_text(code: &str) -> String {
    format!(
        "Your pairing code is {code}. To let you talk to the agent, its owner runs: smsgate pairing approve sms {code} (valid for 1 hour)."
    )
}

pub const APPROVED_TEXT: &str = "You're approved: your messages now reach the agent.";

/// Runs until shutdown, processing whatever the webhook admits.
pub async fn run(app: Arc<App>, mut shutdown: Shutdown) {
    loop {
        match process_next(&app).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                tracing::error!("processing the inbound spool failed: {e}; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        tokio::select! {
            () = app.wake_processor.notified() => {}
            () = shutdown.wait() => return,
        }
    }
}

/// Processes the oldest spooled message; `false` when the spool is empty.
pub async fn process_next(app: &App) -> Result<bool, StoreError> {
    let _guard = app.access_lock.lock().await;
    let Some((key, rec)) = app.store.next_spooled()? else {
        return Ok(false);
    };
    let config = app.config();
    let effects = effects_for(&config, &app.store, &rec, now_ms())?;
    app.store.complete(&key, &effects)?;
    if !effects.outbound.is_empty() {
        app.wake_outbound.notify_one();
    }
    if let Some(msg) = &effects.forward {
        if msg.media_pending {
            app.wake_media.notify_one();
        } else {
            app.agents.pump(app);
        }
    }
    Ok(true)
}

fn media(rec: &InboundRecord) -> Vec<Media> {
    let n: usize = rec
        .field("NumMedia")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (0..n.min(10))
        .filter_map(|i| {
            let url = rec.field(&format!("MediaUrl{i}"))?.to_string();
            let content_type = rec
                .field(&format!("MediaContentType{i}"))
                .unwrap_or("application/octet-stream")
                .to_string();
            Some(Media {
                url,
                content_type,
                path: None,
            })
        })
        .collect()
}

/// Decides what one admitted message does, as the set of store changes to apply.
pub fn effects_for(
    config: &Config,
    store: &Store,
    rec: &InboundRecord,
    now: u64,
) -> Result<Effects, StoreError> {
    let mut fx = Effects {
        now,
        ..Default::default()
    };
    let Some(account) = config.sms.account(&rec.account) else {
        tracing::warn!(sid = %rec.sid, account = %rec.account, "message dropped: its account is no longer configured");
        return Ok(fx);
    };
    let from_raw = rec.field("From").unwrap_or_default();
    let Ok(from) = E164::parse(from_raw) else {
        tracing::warn!(sid = %rec.sid, account = %account.id, "message dropped: From is not an E.164 number");
        return Ok(fx);
    };
    let body = rec.field("Body").unwrap_or_default();
    let (pending, expired): (Vec<PairingRequest>, Vec<PairingRequest>) = store
        .pairing_requests(&account.id)?
        .into_iter()
        .partition(|r| !r.is_expired(now));
    fx.expire_pairing = expired;
    let facts = access::Facts {
        policy: account.dm_policy,
        allow_from: &account.allow_from,
        approved: store.is_approved(&account.id, &from)?,
        opted_out: store.is_opted_out(&account.id, &from)?,
        pending: &pending,
        opt_out_type: access::opt_out_type(rec.field("OptOutType"), &rec.sid),
    };
    let plan = access::plan(&from, body, &facts);
    let who = from.redacted();
    let sid = &rec.sid;
    match plan {
        Plan::OptOut => {
            tracing::info!(account = %account.id, %sid, from = %who, "sender opted out (STOP); nothing will be sent to them until they text START");
            fx.opt = Some((account.id.clone(), from, true));
        }
        Plan::OptIn => {
            tracing::info!(account = %account.id, %sid, from = %who, "sender opted back in (START)");
            fx.opt = Some((account.id.clone(), from, false));
        }
        Plan::Help => {
            tracing::info!(account = %account.id, %sid, from = %who, "message not forwarded: Twilio marked it HELP (OptOutType) and answers it itself");
        }
        Plan::Forward => {
            tracing::info!(account = %account.id, %sid, from = %who, "message queued for the agent");
            let media = media(rec);
            fx.forward = Some(AgentMessage {
                media_pending: !media.is_empty(),
                id: sid.clone(),
                account: account.id.clone(),
                from,
                to: rec.field("To").unwrap_or_default().to_string(),
                text: body.to_string(),
                media,
                received_at_ms: rec.received_at_ms,
            });
        }
        Plan::RequestPairing { send_code } => {
            let taken: Vec<&str> = pending.iter().map(|r| r.code.as_str()).collect();
            let code = std::iter::repeat_with(new_code)
                .find(|c| !taken.contains(&c.as_str()))
                .unwrap_or_else(new_code);
            tracing::info!(account = %account.id, %sid, from = %who, %code, "pairing requested; approve with: smsgate pairing approve sms {code}");
            let (to_sender, to_account) = store.pairing_text_history(&account.id, &from)?;
            match (send_code, budget::allows(&to_sender, &to_account, now)) {
                (true, Ok(())) => {
                    fx.outbound.push(store.new_outbound(
                        &account.id,
                        from.clone(),
                        pairing_code_text(&code),
                        Purpose::PairingCode,
                        now,
                    )?);
                    fx.texted = Some((account.id.clone(), from.clone()));
                }
                (true, Err(why)) => {
                    tracing::warn!(account = %account.id, from = %who, "no pairing code texted: {why} (SMS cost limit)")
                }
                (false, _) => {
                    tracing::info!(account = %account.id, from = %who, "no pairing code texted: the sender has opted out")
                }
            }
            fx.new_pairing = Some(PairingRequest {
                code,
                sender: from,
                account: account.id.clone(),
                created_at_ms: now,
                expires_at_ms: now + PAIRING_TTL_MS,
            });
        }
        Plan::AlreadyPending => {
            tracing::info!(account = %account.id, %sid, from = %who, "message dropped: this sender's pairing request is still pending (no new code sent)");
        }
        Plan::PairingCapReached => {
            tracing::warn!(account = %account.id, %sid, from = %who, "message dropped: {} pairing requests are already pending, so no code was sent; approve or reject them with `smsgate pairing list`", access::MAX_PENDING_PER_ACCOUNT);
        }
        Plan::Deny(reason) => {
            tracing::info!(account = %account.id, %sid, from = %who, "message dropped: {}", reason.as_str());
        }
    }
    Ok(fx)
}
