//! The lookup driver: asks Twilio whether a send of unknown outcome exists (the
//! request went out, no answer came back) and carries out what
//! [`crate::twilio::reconcile`] decides: found (record its SID), not found twice (send
//! it, once), no answer (ask again later; never send blind). Keeps each such send's
//! times by the monotonic clock ([`Tracked`]) so a stepped wall clock moves nothing.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::worker::{finish, monotonic_at, record_sent, save, Sender, Tracked};
use super::PartOutcome;
use crate::clock::now_ms;
use crate::store::{OutboundRecord, OutboundState, StoreError};
use crate::twilio::reconcile::{self, LookupOutcome, Stage, Step};
use crate::twilio::{Creds, SendRequest};

/// Each tracked lookup's stored due time and the milliseconds left until it by the
/// monotonic clock (see [`Tracked`]), by record id. Taken before the outbox is asked,
/// so the two locks are never held together.
pub(super) fn lookup_clock(s: &Sender) -> HashMap<u64, (u64, u64)> {
    let now = Instant::now();
    s.windows()
        .unknown_attempts
        .iter()
        .map(|(id, t)| {
            let left = t.due.1.saturating_duration_since(now).as_millis() as u64;
            (*id, (t.due.0, left))
        })
        .collect()
}

/// A lookup's due time as the monotonic clock has it, on the wall clock as it reads
/// `now` (the stored time if it is not tracked, or was rescheduled since).
pub(super) fn lookup_due(clock: &HashMap<u64, (u64, u64)>, rec: &OutboundRecord, now: u64) -> u64 {
    let remaining = clock
        .get(&rec.id)
        .filter(|(stored, _)| *stored == rec.next_attempt_ms)
        .map(|(_, left)| *left);
    reconcile::due_on_wall_clock(rec.next_attempt_ms, now, remaining)
}

/// Asks Twilio whether a send of unknown outcome exists, and acts on the answer: found
/// (sent, with its SID), not found twice (send it, once), or no answer (ask again
/// later; never send blind).
pub(super) async fn look_up(s: &Sender, mut rec: OutboundRecord) -> Result<(), StoreError> {
    let config = s.config.get();
    let to = rec.to.redacted().to_string();
    let Some(account) = config.sms.account(&rec.account) else {
        s.windows().unknown_attempts.remove(&rec.id);
        finish(
            s,
            rec,
            OutboundState::Failed,
            "its account is no longer configured".into(),
            None,
        )
        .await?;
        return Ok(());
    };
    // "Since the attempt" on our wall clock as it reads now (it may have been stepped
    // since), then on Twilio's clock once its answer says how far that is from ours.
    let stored = rec.attempted_at_ms.unwrap_or(rec.created_ms);
    let asked_at = now_ms();
    let since = s
        .windows()
        .unknown_attempts
        .get(&rec.id)
        .and_then(|t| t.attempt)
        .filter(|(at, _)| *at == stored)
        .map(|(_, mono)| mono.elapsed().as_millis() as u64);
    let (attempt, _) = reconcile::attempt_on_twilio_clock(stored, asked_at, since, None);
    let sender = account
        .sender_for(&rec.to)
        .cloned()
        .unwrap_or_else(|| account.sender.clone());
    let req = SendRequest {
        creds: Creds::of(account),
        to: rec.to.clone(),
        sender: sender.clone(),
        body: rec.body.clone(),
        media_urls: Vec::new(),
        status_callback: None,
        content: None,
    };
    let sent_by = match &sender {
        crate::config::Sender::MessagingService(mg) => reconcile::SentBy::Service(mg.as_str()),
        crate::config::Sender::Number(n) => reconcile::SentBy::Number(n.as_str()),
    };
    let mut failure = None;
    let outcome = match s.twilio.look_up(&req, attempt).await {
        Ok(found) => {
            let skew = found.twilio_minus_ours_ms;
            if skew.is_some_and(|d| d.unsigned_abs() > 60_000) {
                tracing::warn!(account = %account.id, id = rec.id, "Twilio's clock and ours differ by {}s (by its Date header); the lookup matches on Twilio's clock. Check NTP on this host", skew.unwrap_or(0) / 1000);
            }
            let (_, theirs) = reconcile::attempt_on_twilio_clock(stored, asked_at, since, skew);
            // The SIDs another send already holds (recorded as sent, with its status
            // record): an identical earlier text to the same person is not this one.
            let mut taken = HashSet::new();
            for m in found.messages.iter().filter(|m| m.body == rec.body) {
                if s.store.is_our_sid(&m.sid)? {
                    taken.insert(m.sid.clone());
                }
            }
            let wanted = reconcile::Wanted {
                to: rec.to.as_str(),
                from: sent_by,
                body: &rec.body,
                attempt_ms: theirs,
                slack_ms: reconcile::match_slack_ms(since.is_some() && skew.is_some()),
            };
            match reconcile::find_match(&found.messages, &wanted, &taken) {
                Some(m) => LookupOutcome::Found(m.sid.clone()),
                None => match reconcile::no_match_proves_absence(
                    &found.messages,
                    found.complete,
                    theirs,
                ) {
                    Ok(()) => LookupOutcome::NotFound,
                    Err(why) => {
                        tracing::warn!(account = %account.id, to = %to, id = rec.id, "cannot tell yet whether a send of unknown outcome exists: {why}; asking again later (never sent blind)");
                        failure = Some(why);
                        LookupOutcome::Failed
                    }
                },
            }
        }
        Err(e) => {
            let why = reconcile::describe_failure(&e);
            tracing::warn!(account = %account.id, to = %to, id = rec.id, "cannot ask Twilio about a send of unknown outcome: {why}; asking again later (never sent blind)");
            failure = Some(why);
            LookupOutcome::Failed
        }
    };
    let stage = match rec.state {
        OutboundState::Checking => Stage::Checking,
        _ => Stage::Unknown,
    };
    let failures = match outcome {
        LookupOutcome::Failed => rec.lookup_failures + 1,
        _ => 0,
    };
    let now = now_ms();
    let (stage, step) = reconcile::after_lookup(
        stage,
        outcome,
        attempt,
        now,
        failures,
        reconcile::settle_ms(),
    );
    rec.lookup_failures = failures;
    if !matches!(step, Step::LookupAt(_)) {
        s.windows().unknown_attempts.remove(&rec.id);
    }
    match step {
        Step::Found(sid) => {
            tracing::info!(account = %account.id, to = %to, id = rec.id, %sid, "send of unknown outcome found at Twilio: it was sent; recorded, not sent again");
            // It went out, so it leaves the queue and counts against the limits like
            // any other send.
            let segments = crate::text::count_segments(&rec.body).segments;
            // "accepted": the lowest of the statuses a created message has, so any
            // callback that comes is applied.
            record_sent(s, &rec, segments, Some((&sid, "accepted"))).await?;
            s.outbox.part_done(
                &rec,
                PartOutcome::Sent {
                    sid: Some(sid),
                    segments,
                },
            );
        }
        Step::LookupAt(at) => {
            if stage == Stage::Checking && rec.state == OutboundState::Unknown {
                tracing::info!(account = %account.id, to = %to, id = rec.id, "send of unknown outcome not found at Twilio yet; asking once more in {}s", at.saturating_sub(now) / 1000);
            }
            rec.state = match stage {
                Stage::Unknown => OutboundState::Unknown,
                Stage::Checking => OutboundState::Checking,
            };
            // What `queue list` shows for this step.
            rec.last_error = Some(match failure {
                Some(why) => format!("outcome unknown; asking Twilio whether it was sent failed ({failures} time(s) in a row): {why}. Asking again; never sent blind"),
                None if stage == Stage::Checking => "outcome unknown; not found at Twilio at the first check: asking once more before sending it again".into(),
                None => rec.last_error.take().unwrap_or_else(|| "outcome unknown".into()),
            });
            rec.next_attempt_ms = at;
            save(s, &rec).await?;
            let due = (at, monotonic_at(at));
            s.windows()
                .unknown_attempts
                .entry(rec.id)
                .and_modify(|t| t.due = due)
                .or_insert(Tracked { attempt: None, due });
        }
        Step::Resend => {
            tracing::warn!(account = %account.id, to = %to, id = rec.id, "send of unknown outcome: Twilio has no trace of it after two lookups, so it was never created; sending it (once)");
            rec.state = OutboundState::Queued;
            rec.resent = true;
            rec.next_attempt_ms = now;
            rec.last_error = Some("not found at Twilio: sent again".into());
            save(s, &rec).await?;
        }
    }
    Ok(())
}
