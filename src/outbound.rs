//! The outbound sender: works through the durable outbound queue, one message at a
//! time, in order per recipient. Retries 429, 5xx and refused connections with
//! exponential backoff and jitter; never retries a request that may have reached
//! Twilio (a retry could text the person twice).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::agent::hub::PartOutcome;
use crate::daemon::{App, Shutdown};
use crate::store::{now_ms, OutboundRecord, OutboundState, StoreError};
use crate::twilio::{Creds, SendError, SendRequest};

/// Attempts before a retryable failure counts as failed for good (about 40 minutes of
/// backoff in all).
pub const MAX_ATTEMPTS: u32 = 12;
const MAX_BACKOFF: Duration = Duration::from_secs(600);
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The wait before the next attempt after `attempts` tries. `jitter` in [0, 1) scales
/// the doubling delay into its upper half, so the first retry comes within 2 s;
/// `Retry-After` wins when it asks for longer.
pub fn backoff(attempts: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    let base = Duration::from_secs(1u64 << exp).min(MAX_BACKOFF);
    let jittered = base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    match retry_after {
        Some(ra) => jittered.max(ra.min(RETRY_AFTER_CAP)),
        None => jittered,
    }
}

pub async fn run(app: Arc<App>, mut shutdown: Shutdown) {
    match app.store.mark_interrupted_sends_unknown() {
        Ok(0) => {}
        Ok(n) => tracing::warn!("{n} send(s) were in flight when the daemon stopped; their outcome is unknown and they will not be retried (see `smsgate queue list`)"),
        Err(e) => tracing::error!("cannot check for interrupted sends: {e}"),
    }
    loop {
        let wait = match send_due(&app, &mut shutdown).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::error!("outbound queue: {e}; retrying in 1s");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = app.wake_outbound.notified() => {}
            () = tokio::time::sleep(wait) => {}
            () = shutdown.wait() => return,
        }
    }
}

/// Sends every due message; returns how long until the next one is due.
async fn send_due(app: &App, shutdown: &mut Shutdown) -> Result<Duration, StoreError> {
    let now = now_ms();
    let mut next_due: Option<u64> = None;
    // A recipient whose earlier message waits blocks their later ones (chunk order).
    let mut blocked = HashSet::new();
    for rec in app.store.outbound()? {
        if shutdown.is_set() {
            break;
        }
        if rec.state != OutboundState::Queued {
            continue;
        }
        let recipient = (rec.account.clone(), rec.to.clone());
        if blocked.contains(&recipient) {
            continue;
        }
        if rec.next_attempt_ms > now {
            next_due =
                Some(next_due.map_or(rec.next_attempt_ms, |n: u64| n.min(rec.next_attempt_ms)));
            blocked.insert(recipient);
            continue;
        }
        let id = rec.id;
        if !send_one(app, rec).await? {
            continue;
        }
        // Re-read: it was rescheduled.
        if let Some(r) = app.store.outbound()?.into_iter().find(|r| r.id == id) {
            next_due = Some(next_due.map_or(r.next_attempt_ms, |n: u64| n.min(r.next_attempt_ms)));
        }
        blocked.insert(recipient);
    }
    Ok(match next_due {
        Some(at) => Duration::from_millis(at.saturating_sub(now_ms()).max(10)),
        None => Duration::from_secs(60),
    })
}

/// One attempt. Returns whether the message waits for another attempt.
async fn send_one(app: &App, mut rec: OutboundRecord) -> Result<bool, StoreError> {
    let config = app.config();
    let to = rec.to.redacted().to_string();
    let Some(account) = config.sms.account(&rec.account) else {
        return finish(
            app,
            rec,
            OutboundState::Failed,
            "its account is no longer configured".into(),
        );
    };
    if app.store.is_opted_out(&account.id, &rec.to)? {
        return finish(
            app,
            rec,
            OutboundState::Failed,
            "recipient opted out (replied STOP); not sent".into(),
        );
    }
    // Durably mark the attempt before making it: after a crash we must know that this
    // message may already have gone out.
    rec.state = OutboundState::Sending;
    rec.attempts += 1;
    app.store.put_outbound(&rec)?;
    app.commit.flush().await?;
    let req = SendRequest {
        creds: Creds::of(account),
        to: rec.to.clone(),
        sender: account.sender.clone(),
        body: rec.body.clone(),
        media_urls: rec.media_urls.clone(),
        // Delivery statuses come back to our own webhook route.
        status_callback: account.public_url().map(|u| u.raw.clone()),
    };
    match app.twilio.send(&req).await {
        Ok(sent) => {
            app.store.remove_outbound(rec.id)?;
            let segments = sent
                .segments
                .unwrap_or_else(|| crate::text::count_segments(&rec.body).segments);
            app.agents.part_done(
                &rec,
                PartOutcome::Sent {
                    sid: sent.sid.clone(),
                    segments,
                },
            );
            app.metrics.send_ok();
            tracing::info!(account = %account.id, to = %to, sid = sent.sid.as_deref().unwrap_or("?"), segments, part = rec.part + 1, parts = rec.parts, purpose = ?rec.purpose, "sent");
            Ok(false)
        }
        Err(SendError::Retryable {
            detail,
            retry_after,
        }) if rec.attempts < MAX_ATTEMPTS => {
            let wait = backoff(rec.attempts, retry_after, rand::thread_rng().gen());
            tracing::warn!(account = %account.id, to = %to, attempt = rec.attempts, "send failed, retrying in {:.1}s: {detail}", wait.as_secs_f64());
            app.metrics.send_failure("retry");
            rec.state = OutboundState::Queued;
            rec.next_attempt_ms = now_ms() + wait.as_millis() as u64;
            rec.last_error = Some(detail);
            app.store.put_outbound(&rec)?;
            Ok(true)
        }
        Err(SendError::Retryable { detail, .. }) => {
            app.metrics.send_failure("retry");
            finish(
                app,
                rec,
                OutboundState::Failed,
                format!("gave up after {MAX_ATTEMPTS} attempts: {detail}"),
            )
        }
        Err(SendError::Rejected(e)) => {
            app.metrics.send_failure(
                &e.code
                    .map_or_else(|| e.http_status.to_string(), |c| c.to_string()),
            );
            if e.code == Some(21610) {
                app.store.set_opted_out(&account.id, &rec.to, now_ms())?;
                tracing::warn!(account = %account.id, to = %to, "recipient has opted out at Twilio (21610); marked opted out");
            }
            let code = e.code;
            finish_with(app, rec, OutboundState::Failed, e.to_string(), code)
        }
        Err(SendError::Unknown(detail)) => {
            app.metrics.send_failure("unknown");
            finish(
                app,
                rec,
                OutboundState::Unknown,
                format!("outcome unknown: {detail}; not retried, since Twilio may have sent it"),
            )
        }
    }
}

fn finish(
    app: &App,
    rec: OutboundRecord,
    state: OutboundState,
    why: String,
) -> Result<bool, StoreError> {
    finish_with(app, rec, state, why, None)
}

fn finish_with(
    app: &App,
    mut rec: OutboundRecord,
    state: OutboundState,
    why: String,
    code: Option<u32>,
) -> Result<bool, StoreError> {
    tracing::warn!(account = %rec.account, to = %rec.to.redacted(), id = rec.id, state = ?state, "send not completed: {why}");
    rec.state = state;
    rec.last_error = Some(why.clone());
    app.store.put_outbound(&rec)?;
    app.agents
        .part_done(&rec, PartOutcome::Failed { message: why, code });
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_table() {
        let s = Duration::from_secs;
        let cases = [
            (1, None, 0.0, Duration::from_millis(500)),
            (1, None, 1.0, s(1)),
            (2, None, 1.0, s(2)),
            (3, None, 0.0, s(2)),
            (4, None, 1.0, s(8)),
            (1, Some(s(30)), 0.5, s(30)),
            (5, Some(s(1)), 1.0, s(16)),
            (30, None, 1.0, MAX_BACKOFF),
            (1, Some(s(99_999)), 0.0, RETRY_AFTER_CAP),
        ];
        for (attempts, ra, jitter, want) in cases {
            assert_eq!(
                backoff(attempts, ra, jitter),
                want,
                "attempts {attempts}, retry-after {ra:?}"
            );
        }
        // The first retry always comes within 2 s.
        assert!(backoff(1, None, 0.999) < s(2));
    }
}
