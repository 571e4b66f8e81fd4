//! The sender: works through the in-memory outbound queue, one message at a time, in
//! order per recipient. Retries 429, 5xx and refused connections with exponential
//! backoff and jitter; never retries a request that may have reached Twilio (a retry
//! could text the person twice). Every state change is written through the store
//! writer; the attempt is durable before the request leaves. A send whose outcome is
//! unknown is handed to the lookup driver ([`super::lookup`]) when its lookup is due.

use std::time::{Duration, Instant};

use rand::Rng;

use super::held;
use super::lookup::{look_up, lookup_clock, lookup_due};
use super::window;
use super::worker::{finish, monotonic_at, record_sent, save, Tracked};
use super::PartOutcome;
use crate::backoff::{Backoff, Jitter, RetryAfter};
use crate::clock::now_ms;
use crate::limits::Verdict;
use crate::shutdown::Shutdown;
use crate::store::{OutboundRecord, OutboundState, Purpose, StoreError};
use crate::twilio::reconcile;
use crate::twilio::{Creds, SendError, SendRequest};

pub(crate) use super::worker::Sender;

/// Attempts before a retryable failure counts as failed for good (about 40 minutes of
/// backoff in all).
pub(crate) const MAX_ATTEMPTS: u32 = 12;
const MAX_BACKOFF: Duration = Duration::from_secs(600);
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The retry schedule of a send: 1 s doubling to [`MAX_BACKOFF`], jittered into the
/// upper half of each step (so the first retry comes within 2 s); `Retry-After` wins
/// when it asks for longer (at most [`RETRY_AFTER_CAP`]).
const SEND_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(1),
    factor: 2,
    cap: MAX_BACKOFF,
    jitter: Jitter::UpperHalf,
    retry_after: RetryAfter::AtLeast {
        cap: RETRY_AFTER_CAP,
    },
};

/// The wait before the next attempt after `attempts` tries, by [`SEND_BACKOFF`];
/// `jitter` in [0, 1).
pub(crate) fn backoff(attempts: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    SEND_BACKOFF.wait(attempts, retry_after, jitter)
}

/// Whether a send is checked against `outboundLimits`: what the agent sends (replies
/// and its own sends) and the texts smsgate sends itself (pairing codes, approvals,
/// `/new` confirmations: anyone who can text the number can trigger those, so they
/// must not run up the bill either). The operator's `message send` and a send the
/// operator released are not. (Every send that goes out is counted in the window.)
fn limited(rec: &OutboundRecord) -> bool {
    !matches!(rec.purpose, Purpose::Cli) && !rec.released
}

/// What a send counts for `outboundLimits` and the `sent` line: Twilio's count, else
/// ours. A WhatsApp message is one, whatever its length: it is not billed by segment
/// (CONTRACT §12).
fn segments_of(rec: &OutboundRecord, twilio: Option<u32>) -> u32 {
    if rec.to.is_whatsapp() {
        return 1;
    }
    twilio.unwrap_or_else(|| crate::text::count_segments(&rec.body).segments)
}

pub(crate) async fn run(s: Sender, mut shutdown: Shutdown) {
    // One write: the sends cut off by the last stop become of unknown outcome, and
    // the in-memory queue is loaded from the same snapshot, in commit order with the
    // agents' sends already arriving (see `Outbox::reload_in`).
    let outbox = s.outbox.clone();
    let started = s
        .writer
        .write(move |st, hooks| {
            let n = st.mark_interrupted_sends_unknown()?;
            outbox.reload_in(st, hooks)?;
            Ok(n)
        })
        .await;
    match started {
        Ok(0) => {}
        Ok(n) => tracing::warn!("{n} send(s) were in flight when the daemon stopped; their outcome is unknown: Twilio will be asked whether they exist before anything is sent again (see `smsgate queue list`)"),
        Err(e) => tracing::error!("cannot load the outbound queue: {e}"),
    }
    loop {
        let wait = match send_due(&s, &mut shutdown).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::error!("outbound queue: {e}; retrying in 1s");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = s.outbox.woken() => {}
            () = tokio::time::sleep(wait) => {}
            () = shutdown.wait() => return,
        }
    }
}

/// Sends every due message (a recipient's next part as soon as the previous one is
/// sent); returns how long until the next one is due.
async fn send_due(s: &Sender, shutdown: &mut Shutdown) -> Result<Duration, StoreError> {
    loop {
        let now = now_ms();
        let clock = lookup_clock(s);
        // The due-index (see `due`): what is due now and the next wake, without a
        // scan of every live send.
        let (attempt, next_due) = s.outbox.due(now, |rec| lookup_due(&clock, rec, now));
        if attempt.is_empty() || shutdown.is_set() {
            return Ok(match next_due {
                Some(at) => Duration::from_millis(at.saturating_sub(now_ms()).max(10)),
                None => Duration::from_secs(60),
            });
        }
        for mut rec in attempt {
            if shutdown.is_set() {
                break;
            }
            match rec.state {
                OutboundState::Queued => {
                    send_one(s, rec).await?;
                }
                // A held send whose window allows it now (releaseHeld: "auto"): the
                // limits are checked again before it goes.
                OutboundState::Held => {
                    rec.state = OutboundState::Queued;
                    send_one(s, rec).await?;
                }
                _ => {
                    rec.next_attempt_ms = lookup_due(&clock, &rec, now);
                    look_up(s, rec).await?;
                }
            }
        }
    }
}

/// The log line and metric of a full `outboundLimits` window (once per window).
fn announce_hold(
    s: &Sender,
    account: &crate::config::Account,
    limit: crate::limits::Limit,
    max: u32,
) {
    let auto = if account.release_held_auto {
        "; or they go when the window allows (releaseHeld is auto)"
    } else {
        ""
    };
    let window = if held::span_ms(limit) > 3_600_000 {
        "day"
    } else {
        "hour"
    };
    tracing::warn!(account = %account.id, limit = held::label(limit), "outbound limit reached: {} ({max} SMS segments) is full, so sends over it are held, not sent: see `smsgate queue list`, release with `smsgate queue release ID` or `--all`{auto}. Said once per {window}; each held send's agent gets an error line", limit.key());
    s.metrics
        .outbound_limit_hit(&account.id, held::label(limit));
}

/// A send over a full window with `outboundLimits.maxHeld` sends already held: removed
/// from the store and the queue, and its author hears why (the log says so once an
/// hour per account).
async fn refuse_over_cap(
    s: &Sender,
    account: &crate::config::Account,
    rec: OutboundRecord,
    mut ids: Vec<u64>,
    over: &str,
) -> Result<Option<u64>, StoreError> {
    let why = held::refused_message(over, account.max_held);
    let id = rec.id;
    // The reply or send is refused as a whole (`ids`: its live parts): the parts queued
    // behind this one go too, so no part of it goes out or is held later.
    if !ids.contains(&id) {
        ids.push(id);
    }
    let gone = ids;
    let outbox = s.outbox.clone();
    s.writer
        .write(move |st, hooks| {
            gone.iter().try_for_each(|i| st.remove_outbound(*i))?;
            hooks.after(move || gone.iter().for_each(|i| outbox.forget(*i)));
            Ok(())
        })
        .await?;
    let now = now_ms();
    let say = {
        let mut w = s.windows();
        let last = w.max_held_announced.get(&account.id).copied();
        let new = held::is_new_window(last, held::MAX_HELD_ANNOUNCE_MS, now);
        if new {
            w.max_held_announced.insert(account.id.clone(), now);
        }
        new
    };
    if say {
        tracing::warn!(account = %account.id, "outboundLimits.maxHeld reached: {} sends are held, so further sends over {over} are refused and not stored; each one's agent gets an error line. Release or purge held sends (`smsgate queue list`), or raise outboundLimits.maxHeld. Said once an hour", account.max_held);
    }
    tracing::debug!(account = %account.id, to = %rec.to.redacted(), id, "send refused: {why}");
    s.metrics.outbound_limit_hit(&account.id, "maxHeld");
    s.outbox.part_done(
        &rec,
        PartOutcome::Failed {
            message: why,
            code: None,
        },
    );
    Ok(None)
}

/// Whether holding `rec` would pass `outboundLimits.maxHeld` (issue 20 item 7): the
/// account's held sends (over a spending limit, in the outbox; outside WhatsApp's
/// window, in the store) and the other parts of its reply or send still to come.
/// `Some(ids)`: refuse it, with those live parts of its reply or send. Only for a send
/// not held already (one held by a full window keeps its place).
fn over_max_held(
    s: &Sender,
    account: &crate::config::Account,
    rec: &OutboundRecord,
) -> Result<Option<Vec<u64>>, StoreError> {
    if account.max_held == 0 {
        return Ok(None);
    }
    let parts = rec.group.map_or_else(Vec::new, |g| s.outbox.group_parts(g));
    let coming = parts
        .iter()
        .filter(|(id, state)| *id != rec.id && *state != OutboundState::Held)
        .count();
    let held_now = s.outbox.held_len(&account.id)
        + s.store
            .whatsapp_held_count(&account.id, account.max_held as usize)?;
    Ok(
        (held::overflow(held_now, coming, account.max_held) == held::Overflow::Refuse)
            .then(|| parts.into_iter().map(|(id, _)| id).collect()),
    )
}

/// Whether the account has a re-engagement template (`whatsapp.templates.reengage`).
fn has_template(account: &crate::config::Account) -> bool {
    account
        .whatsapp
        .as_ref()
        .is_some_and(|w| w.reengage.is_some())
}

/// A free-form WhatsApp text outside the 24-hour window (by our record of the
/// person's last message, or by Twilio's 63016): with `whatsapp.templates.reengage`
/// the template goes and the text is held (area `W`) until the person writes again,
/// both in one batch; behind a template already out it is only held; without a
/// template it fails with 63016 and its hint. The author hears either way.
async fn outside_window(
    s: &Sender,
    account: &crate::config::Account,
    mut rec: OutboundRecord,
    step: window::Step,
) -> Result<Option<u64>, StoreError> {
    let template = account.whatsapp.as_ref().and_then(|w| w.reengage.clone());
    let (tpl, why) = match (step, template) {
        (window::Step::Template, Some(sid)) => {
            let mut t = s.store.new_outbound(
                &account.id,
                rec.to.clone(),
                String::new(),
                Purpose::Reengage,
                now_ms(),
            )?;
            t.content_sid = Some(sid);
            t.content_variables = Some(window::variables(&rec.body));
            (Some(t), "held: more than 24 hours since they last wrote on WhatsApp, so the re-engagement template (whatsapp.templates.reengage) was sent instead; this text goes once they answer")
        }
        (window::Step::Hold, _) => (None, "held: more than 24 hours since they last wrote on WhatsApp; the re-engagement template is already out, and this text goes once they answer"),
        _ => {
            let why = "not sent: more than 24 hours since they last wrote on WhatsApp, and only an approved template may be sent now (Twilio error 63016); set whatsapp.templates.reengage so the template is sent and the text held until they answer".to_string();
            return finish(s, rec, OutboundState::Failed, why, Some(window::OUTSIDE_WINDOW)).await;
        }
    };
    // Held texts count against `outboundLimits.maxHeld` like those over a spending
    // limit: an agent writing to people who never answer cannot fill the store.
    if let Some(ids) = over_max_held(s, account, &rec)? {
        return refuse_over_cap(s, account, rec, ids, "WhatsApp's 24-hour window").await;
    }
    rec.state = OutboundState::Queued;
    rec.attempts = 0;
    rec.next_attempt_ms = 0;
    rec.last_error = Some(why.to_string());
    let (held, outbox) = (rec.clone(), s.outbox.clone());
    s.writer
        .write(move |st, hooks| {
            st.hold_whatsapp(&held, tpl.as_ref())?;
            hooks.after(move || {
                outbox.forget(held.id);
                if let Some(t) = tpl {
                    outbox.queued(vec![t]);
                }
            });
            Ok(())
        })
        .await?;
    tracing::info!(account = %account.id, to = %rec.to.redacted(), id = rec.id, template = step == window::Step::Template, "WhatsApp text held until the person writes again (outside the 24-hour window)");
    s.outbox.part_done(
        &rec,
        PartOutcome::Failed {
            message: why.to_string(),
            code: None,
        },
    );
    Ok(None)
}

/// One attempt. Returns when the message is due again if it waits for another attempt.
async fn send_one(s: &Sender, mut rec: OutboundRecord) -> Result<Option<u64>, StoreError> {
    let config = s.config.get();
    let to = rec.to.redacted().to_string();
    let Some(account) = config.sms.account(&rec.account) else {
        return finish(
            s,
            rec,
            OutboundState::Failed,
            "its account is no longer configured".into(),
            None,
        )
        .await;
    };
    let Some(sender) = account.sender_for(&rec.to).cloned() else {
        return finish(
            s,
            rec,
            OutboundState::Failed,
            "WhatsApp is no longer enabled for its account".into(),
            None,
        )
        .await;
    };
    if s.store.is_opted_out(&account.id, &rec.to)? {
        return finish(
            s,
            rec,
            OutboundState::Failed,
            "recipient opted out (replied STOP); not sent".into(),
            None,
        )
        .await;
    }
    // WhatsApp's 24-hour window (CONTRACT §12): a free-form text outside it is not
    // attempted (Twilio would fail it with 63016).
    if rec.to.is_whatsapp() && rec.content_sid.is_none() {
        let last = s.store.whatsapp_last_inbound(&account.id, &rec.to)?;
        let step = window::step(
            last,
            now_ms(),
            window::window_ms(),
            has_template(account),
            s.store.whatsapp_holding(&account.id, &rec.to)?,
        );
        if step != window::Step::Send {
            return outside_window(s, account, rec, step).await;
        }
    }
    if limited(&rec) {
        let segments = segments_of(&rec, None).max(1);
        let now = now_ms();
        let verdict = s.windows().sent.check(
            &account.id,
            &account.outbound_limits,
            rec.to.as_str(),
            segments,
            now,
            |w| {
                let day = crate::access::budget::DAY_MS;
                let mut logged = 0u64;
                let read = s.store.for_each_sent(&account.id, now, day, |at, to, n| {
                    logged += u64::from(n);
                    w.record(at, to, n);
                });
                match read {
                    Ok(()) => tracing::debug!(account = %account.id, "spending window built from the sent log: {logged} segment(s) of the last day, kept as {} per-minute entries", w.entries()),
                    Err(e) => tracing::error!(account = %account.id, "cannot read the sent log (the spending limits count from now): {e}"),
                }
            },
        );
        if let Verdict::Hold {
            limit,
            max,
            until_ms,
        } = verdict
        {
            if rec.purpose.is_own_text() {
                // Dropped, not held (see `Purpose::is_own_text`); `finish` logs it.
                let why = format!("not sent: over {} ({max} SMS segments); texts smsgate sends itself are dropped over a limit, not held", limit.key());
                return finish(s, rec, OutboundState::Failed, why, None).await;
            }
            let why = format!(
                "held: over {} ({max} SMS segments); release it with `smsgate queue release {}`{}",
                limit.key(),
                rec.id,
                match (account.release_held_auto, until_ms) {
                    (true, Some(_)) => " (or wait: releaseHeld is auto)",
                    _ => "",
                }
            );
            // The agent hears once per held send (an auto-release that finds the
            // window still full holds it again quietly); the log and the metric once
            // per full window (see `held`).
            let first = rec.held_limit.is_none();
            // A send that would be held beyond `outboundLimits.maxHeld` is refused and
            // leaves the store (issue 20 item 7). One held already (auto-release found
            // the window still full) keeps its place.
            if first {
                if let Some(ids) = over_max_held(s, account, &rec)? {
                    return refuse_over_cap(s, account, rec, ids, limit.key()).await;
                }
            }
            rec.state = OutboundState::Held;
            rec.held_limit = Some(limit.key().to_string());
            rec.next_attempt_ms = match (account.release_held_auto, until_ms) {
                (true, Some(at)) => at,
                _ => u64::MAX,
            };
            rec.last_error = Some(why.clone());
            save(s, &rec).await?;
            if first {
                if s.windows().announced.announce(&account.id, limit, now_ms()) {
                    announce_hold(s, account, limit, max);
                }
                tracing::debug!(account = %account.id, to = %to, id = rec.id, "send {why}");
                s.outbox.part_done(
                    &rec,
                    PartOutcome::Failed {
                        message: why,
                        code: None,
                    },
                );
            }
            return Ok(Some(rec.next_attempt_ms));
        }
    }
    // Durably mark the attempt before making it: after a crash we must know that this
    // message may already have gone out.
    rec.state = OutboundState::Sending;
    rec.attempts += 1;
    rec.attempted_at_ms = Some(now_ms());
    // The same moment by the monotonic clock (see `Windows::unknown_attempts`).
    let started = Instant::now();
    save(s, &rec).await?;
    let req = SendRequest {
        creds: Creds::of(account),
        to: rec.to.clone(),
        sender,
        body: rec.body.clone(),
        media_urls: rec.media_urls.clone(),
        // Delivery statuses come back to our own webhook route.
        status_callback: account.public_url().map(|u| u.raw.clone()),
        content: rec
            .content_sid
            .clone()
            .map(|sid| crate::twilio::client::Content {
                sid,
                variables: rec.content_variables.clone(),
            }),
    };
    match s.twilio.send(&req).await {
        Ok(sent) => {
            let segments = segments_of(&rec, sent.segments);
            let status = sent.status.as_deref().unwrap_or("queued");
            record_sent(
                s,
                &rec,
                segments,
                sent.sid.as_deref().map(|sid| (sid, status)),
            )
            .await?;
            s.outbox.part_done(
                &rec,
                PartOutcome::Sent {
                    sid: sent.sid.clone(),
                    segments,
                },
            );
            s.metrics.send_ok();
            tracing::info!(account = %account.id, to = %to, sid = sent.sid.as_deref().unwrap_or("?"), segments, part = rec.part + 1, parts = rec.parts, purpose = %crate::logging::label(&rec.purpose), "sent");
            Ok(None)
        }
        Err(SendError::Retryable {
            detail,
            retry_after,
        }) if rec.attempts < MAX_ATTEMPTS => {
            let wait = backoff(rec.attempts, retry_after, rand::thread_rng().gen());
            tracing::warn!(account = %account.id, to = %to, attempt = rec.attempts, "send failed, retrying in {:.1}s: {detail}", wait.as_secs_f64());
            s.metrics.send_failure("retry");
            rec.state = OutboundState::Queued;
            rec.next_attempt_ms = now_ms() + wait.as_millis() as u64;
            rec.last_error = Some(detail);
            save(s, &rec).await?;
            Ok(Some(rec.next_attempt_ms))
        }
        Err(SendError::Retryable { detail, .. }) => {
            s.metrics.send_failure("retry");
            finish(
                s,
                rec,
                OutboundState::Failed,
                format!("gave up after {MAX_ATTEMPTS} attempts: {detail}"),
                None,
            )
            .await
        }
        // Twilio's clock says the window is closed (CONTRACT §12): the same as ours.
        Err(SendError::Rejected(e))
            if e.code == Some(window::OUTSIDE_WINDOW)
                && rec.to.is_whatsapp()
                && rec.content_sid.is_none() =>
        {
            s.metrics.send_failure(&window::OUTSIDE_WINDOW.to_string());
            tracing::warn!(account = %account.id, to = %to, id = rec.id, "Twilio refused a WhatsApp text with 63016 (outside the 24-hour window by its clock)");
            let holding = s.store.whatsapp_holding(&account.id, &rec.to)?;
            let step = window::outside(has_template(account), holding);
            outside_window(s, account, rec, step).await
        }
        Err(SendError::Rejected(e)) => {
            s.metrics.send_failure(
                &e.code
                    .map_or_else(|| e.http_status.to_string(), |c| c.to_string()),
            );
            if e.code == Some(21610) {
                let (acc, num) = (account.id.clone(), rec.to.clone());
                s.writer
                    .write(move |st, _| st.set_opted_out(&acc, &num, now_ms()))
                    .await?;
                tracing::warn!(account = %account.id, to = %to, "recipient has opted out at Twilio (21610); marked opted out");
            }
            let code = e.code;
            finish(s, rec, OutboundState::Failed, e.to_string(), code).await
        }
        Err(SendError::Unknown(detail)) => {
            // Not retried blind (Twilio may have sent it), not given up: Twilio is
            // asked after a settle time. Whoever waits hears when that is settled.
            s.metrics.send_failure("unknown");
            let attempt = rec.attempted_at_ms.unwrap_or_else(now_ms);
            rec.state = OutboundState::Unknown;
            rec.lookup_failures = 0;
            rec.next_attempt_ms = reconcile::first_check_at(attempt);
            s.windows().unknown_attempts.insert(
                rec.id,
                Tracked {
                    attempt: Some((attempt, started)),
                    due: (rec.next_attempt_ms, monotonic_at(rec.next_attempt_ms)),
                },
            );
            rec.last_error = Some(format!("outcome unknown: {detail}"));
            tracing::warn!(account = %account.id, to = %to, id = rec.id, "send outcome unknown ({detail}); not retried blind: Twilio will be asked in {}s whether it exists", reconcile::settle_ms() / 1000);
            save(s, &rec).await?;
            Ok(Some(rec.next_attempt_ms))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::E164;
    use crate::store::Purpose;

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

    fn rec(id: u64, to: &str, at: u64) -> OutboundRecord {
        let mut r = OutboundRecord::new(
            id,
            "default",
            E164::parse(to).expect("number"),
            format!("part {id}"),
            Purpose::Cli,
            0,
        );
        r.next_attempt_ms = at;
        r
    }

    #[test]
    fn due_table() {
        let a = "+15550000001";
        let b = "+15550000002";
        type Case = (
            &'static str,
            Vec<OutboundRecord>,
            u64,
            Vec<u64>,
            Option<u64>,
        );
        let with = |mut r: OutboundRecord, state| {
            r.state = state;
            r
        };
        let cases: [Case; 6] = [
            ("empty", vec![], 10, vec![], None),
            (
                "both due",
                vec![rec(1, a, 0), rec(2, b, 5)],
                10,
                vec![1, 2],
                None,
            ),
            (
                "a recipient's later part waits for the earlier one",
                vec![rec(1, a, 0), rec(2, a, 0)],
                10,
                vec![1],
                None,
            ),
            (
                "an earlier part not due blocks a due later part",
                vec![rec(1, a, 50), rec(2, a, 0), rec(3, b, 0)],
                10,
                vec![3],
                Some(50),
            ),
            (
                "failed records are skipped",
                vec![
                    {
                        let mut r = rec(1, a, 0);
                        r.state = OutboundState::Failed;
                        r
                    },
                    rec(2, a, 20),
                ],
                10,
                vec![],
                Some(20),
            ),
            (
                "unknown sends are looked up when due and block nobody; held ones wait for \
                 the operator, or for their window under releaseHeld auto",
                vec![
                    with(rec(1, a, 5), OutboundState::Unknown),
                    rec(2, a, 0),
                    with(rec(3, b, u64::MAX), OutboundState::Held),
                    with(rec(4, b, 8), OutboundState::Held),
                    with(rec(5, b, 30), OutboundState::Checking),
                ],
                10,
                vec![1, 2, 4],
                Some(30),
            ),
        ];
        for (name, queue, now, want, next) in cases {
            let mut index = super::super::DueIndex::new();
            for r in queue {
                index.upsert(r);
            }
            assert_eq!(
                index.due(now, |r| r.next_attempt_ms),
                (want, next),
                "{name}"
            );
        }
    }
}
