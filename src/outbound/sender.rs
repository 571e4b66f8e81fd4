//! The sender: works through the in-memory outbound queue, one message at a time, in
//! order per recipient. Retries 429, 5xx and refused connections with exponential
//! backoff and jitter; never retries a request that may have reached Twilio (a retry
//! could text the person twice). Every state change is written through the store
//! writer; the attempt is durable before the request leaves.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::held::{self, Announced};
use super::{Outbox, PartOutcome};
use crate::app::LiveConfig;
use crate::backoff::{Backoff, Jitter, RetryAfter};
use crate::clock::now_ms;
use crate::limits::{SendWindow, Verdict};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{OutboundRecord, OutboundState, Purpose, Store, StoreError, Writer};
use crate::twilio::reconcile::{self, LookupOutcome, Stage, Step};
use crate::twilio::{Creds, MessagesApi, SendError, SendRequest};

/// Attempts before a retryable failure counts as failed for good (about 40 minutes of
/// backoff in all).
pub const MAX_ATTEMPTS: u32 = 12;
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
pub fn backoff(attempts: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    SEND_BACKOFF.wait(attempts, retry_after, jitter)
}

/// The handles the sender needs.
pub struct Sender {
    pub store: Arc<Store>,
    pub writer: Writer,
    pub outbox: Arc<Outbox>,
    pub config: Arc<LiveConfig>,
    pub twilio: Arc<dyn MessagesApi>,
    pub metrics: Arc<Metrics>,
    /// What the sender remembers in memory (see [`Windows`]).
    pub windows: std::sync::Mutex<Windows>,
}

/// What the sender keeps in memory: the spending limits' windows and what was said
/// about them, and the monotonic times of each send of unknown outcome.
#[derive(Debug, Default)]
pub struct Windows {
    /// Per account, what went out in the last day (rebuilt from the sent log at start).
    sent: HashMap<String, SendWindow>,
    /// Which full windows were already announced.
    announced: Announced,
    /// Record id → its times by the monotonic clock, for sends of unknown outcome.
    /// Lost on restart (the stored wall times are used then).
    unknown_attempts: HashMap<u64, Tracked>,
    /// When the log last said that `outboundLimits.maxHeld` was reached, per account.
    max_held_announced: HashMap<String, u64>,
}

/// A send of unknown outcome's times by the monotonic clock next to the stored wall
/// times, so that a wall clock stepped meanwhile (NTP after boot, an operator) neither
/// moves "since the attempt" nor makes a lookup come early (two lookups that find
/// nothing must be minutes apart in fact) or hours late.
#[derive(Debug)]
struct Tracked {
    /// The stored attempt time and the same moment; `None` if attempted before a
    /// restart.
    attempt: Option<(u64, Instant)>,
    /// The stored time of the next lookup and when it falls due.
    due: (u64, Instant),
}

/// The monotonic moment of the wall-clock time `at_ms`, as the wall clock reads now.
fn monotonic_at(at_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms()))
}

impl Sender {
    fn windows(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether a send counts against `outboundLimits`: what the agent sends (replies and
/// its own sends). Pairing texts keep their own budget; the operator's `message send`
/// and the texts smsgate sends itself are not the agent's bill.
fn limited(rec: &OutboundRecord) -> bool {
    matches!(rec.purpose, Purpose::Reply { .. } | Purpose::Send { .. }) && !rec.released
}

pub async fn run(s: Sender, mut shutdown: Shutdown) {
    match s.writer.write(|st, _| st.mark_interrupted_sends_unknown()).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!("{n} send(s) were in flight when the daemon stopped; their outcome is unknown: Twilio will be asked whether they exist before anything is sent again (see `smsgate queue list`)"),
        Err(e) => tracing::error!("cannot check for interrupted sends: {e}"),
    }
    if let Err(e) = s.outbox.load(&s.store) {
        tracing::error!("cannot read the outbound queue: {e}");
    }
    match s.store.sent_log() {
        Ok(log) => {
            let mut w = s.windows();
            for (account, at, to, segments) in log {
                w.sent.entry(account).or_default().record(at, &to, segments);
            }
        }
        Err(e) => tracing::error!("cannot read the sent log (spending limits start empty): {e}"),
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

/// Each tracked lookup's stored due time and the milliseconds left until it by the
/// monotonic clock (see [`Tracked`]), by record id. Taken before the outbox is asked,
/// so the two locks are never held together.
fn lookup_clock(s: &Sender) -> HashMap<u64, (u64, u64)> {
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
fn lookup_due(clock: &HashMap<u64, (u64, u64)>, rec: &OutboundRecord, now: u64) -> u64 {
    let remaining = clock
        .get(&rec.id)
        .filter(|(stored, _)| *stored == rec.next_attempt_ms)
        .map(|(_, left)| *left);
    reconcile::due_on_wall_clock(rec.next_attempt_ms, now, remaining)
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
    limit: crate::limits::Limit,
) -> Result<Option<u64>, StoreError> {
    let why = held::refused_message(limit, account.max_held);
    let id = rec.id;
    // The reply or send is refused as a whole (`ids`: its live parts): the parts queued
    // behind this one go too, so no part of it goes out or is held later.
    if !ids.contains(&id) {
        ids.push(id);
    }
    let gone = ids.clone();
    s.writer
        .write(move |st, _| gone.iter().try_for_each(|i| st.remove_outbound(*i)))
        .await?;
    for i in ids {
        s.outbox.forget(i);
    }
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
        tracing::warn!(account = %account.id, "outboundLimits.maxHeld reached: {} sends are held, so further sends over {} are refused and not stored; each one's agent gets an error line. Release or purge held sends (`smsgate queue list`), or raise outboundLimits.maxHeld. Said once an hour", account.max_held, limit.key());
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

/// Writes `rec` (through the writer) and keeps the in-memory queue in step.
async fn save(s: &Sender, rec: &OutboundRecord) -> Result<(), StoreError> {
    let r = rec.clone();
    s.writer.write(move |st, _| st.put_outbound(&r)).await?;
    s.outbox.update(rec);
    Ok(())
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
    if limited(&rec) {
        let segments = crate::text::count_segments(&rec.body).segments.max(1);
        let verdict = s
            .windows()
            .sent
            .entry(account.id.clone())
            .or_default()
            .check(
                &account.outbound_limits,
                rec.to.as_str(),
                segments,
                now_ms(),
            );
        if let Verdict::Hold {
            limit,
            max,
            until_ms,
        } = verdict
        {
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
                let parts = rec.group.map_or_else(Vec::new, |g| s.outbox.group_parts(g));
                let coming = parts
                    .iter()
                    .filter(|(id, state)| *id != rec.id && *state != OutboundState::Held)
                    .count();
                let held_now = s.outbox.held_len(&account.id);
                if held::overflow(held_now, coming, account.max_held) == held::Overflow::Refuse {
                    let ids = parts.into_iter().map(|(id, _)| id).collect();
                    return refuse_over_cap(s, account, rec, ids, limit).await;
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
        sender: account.sender.clone(),
        body: rec.body.clone(),
        media_urls: rec.media_urls.clone(),
        // Delivery statuses come back to our own webhook route.
        status_callback: account.public_url().map(|u| u.raw.clone()),
    };
    match s.twilio.send(&req).await {
        Ok(sent) => {
            let id = rec.id;
            let segments = sent
                .segments
                .unwrap_or_else(|| crate::text::count_segments(&rec.body).segments);
            let status = sent.status.as_deref().unwrap_or("queued");
            record_sent(
                s,
                &rec,
                segments,
                sent.sid.as_deref().map(|sid| (sid, status)),
            )
            .await?;
            s.outbox.forget(id);
            s.outbox.part_done(
                &rec,
                PartOutcome::Sent {
                    sid: sent.sid.clone(),
                    segments,
                },
            );
            s.metrics.send_ok();
            tracing::info!(account = %account.id, to = %to, sid = sent.sid.as_deref().unwrap_or("?"), segments, part = rec.part + 1, parts = rec.parts, purpose = ?rec.purpose, "sent");
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

/// Asks Twilio whether a send of unknown outcome exists, and acts on the answer: found
/// (sent, with its SID), not found twice (send it, once), or no answer (ask again
/// later; never send blind).
async fn look_up(s: &Sender, mut rec: OutboundRecord) -> Result<(), StoreError> {
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
    let req = SendRequest {
        creds: Creds::of(account),
        to: rec.to.clone(),
        sender: account.sender.clone(),
        body: rec.body.clone(),
        media_urls: Vec::new(),
        status_callback: None,
    };
    let sent_by = match &account.sender {
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
            s.outbox.forget(rec.id);
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

/// A send went out: out of the queue and into the sent log (one batch), and into the
/// account's spending window.
async fn record_sent(
    s: &Sender,
    rec: &OutboundRecord,
    segments: u32,
    sid: Option<(&str, &str)>,
) -> Result<(), StoreError> {
    let at = now_ms();
    let done = rec.clone();
    let sid = sid.map(|(sid, status)| (sid.to_string(), status.to_string()));
    s.writer
        .write(move |st, _| {
            let sid = sid.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
            st.complete_send(&done, segments, at, sid)
        })
        .await?;
    s.windows()
        .sent
        .entry(rec.account.clone())
        .or_default()
        .record(at, rec.to.as_str(), segments);
    Ok(())
}

async fn finish(
    s: &Sender,
    mut rec: OutboundRecord,
    state: OutboundState,
    why: String,
    code: Option<u32>,
) -> Result<Option<u64>, StoreError> {
    tracing::warn!(account = %rec.account, to = %rec.to.redacted(), id = rec.id, state = ?state, "send not completed: {why}");
    rec.state = state;
    rec.last_error = Some(why.clone());
    rec.last_code = code;
    save(s, &rec).await?;
    s.outbox
        .part_done(&rec, PartOutcome::Failed { message: why, code });
    Ok(None)
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
