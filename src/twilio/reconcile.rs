//! Resolving a send whose outcome is unknown (the request went out, no answer came
//! back) by asking Twilio instead of guessing.
//!
//! Twilio's create call has no idempotency key, so a blind retry can text someone twice
//! and giving up can lose the text. Instead: after a settle time, list the account's
//! messages to that recipient from that sender since the attempt and look for our body.
//! Found: it was sent (record its SID). Not found at the first check: look once more
//! later (a long code sends about one segment a second, so a busy number's queue can
//! hold a message a while, and `DateSent` is only set once it leaves). Not found at the
//! second check either: Twilio never created it, so send it, once. Twilio unreachable or
//! answering nonsense: keep asking with backoff; never send blind.
//!
//! Everything here is pure; the outbound sender carries out the [`Step`]s.

use std::collections::HashSet;
use std::time::Duration;

use super::error::RestError;
use super::listing::Listed;
use crate::backoff::{Backoff, Jitter, RetryAfter};

/// How long after the attempt the first lookup runs.
pub(crate) const FIRST_CHECK_MS: u64 = 2 * 60 * 1000;
/// How long after the attempt the second (last) lookup runs.
pub(crate) const SECOND_CHECK_MS: u64 = 10 * 60 * 1000;
/// Backoff between lookups that failed (Twilio unreachable), at most.
pub(crate) const MAX_LOOKUP_BACKOFF_MS: u64 = 5 * 60 * 1000;
/// Slack for clocks: a listed message created this long before the attempt still counts.
/// Small on purpose (a wider window could take an identical earlier text for this one):
/// a known difference between our clock and Twilio's is corrected first (see
/// [`attempt_on_twilio_clock`]), so this only covers what cannot be measured.
pub(crate) const CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// The slack of the match when Twilio's answer said how far its clock is from ours
/// (its `Date` header): what is left is that header's and `date_created`'s
/// whole-second resolution (up to a second each), the answer's time in transit, and
/// the difference between the clocks of Twilio's own servers (NTP: well under a
/// second). 10 s covers that with room; it is not wider because a listed identical
/// text from before the attempt must not be taken for this send.
pub(crate) const MEASURED_SKEW_SLACK_MS: u64 = 10 * 1000;

/// How early before the attempt (on Twilio's clock) a listed message may have been
/// created and still be this send: [`MEASURED_SKEW_SLACK_MS`] when the attempt is
/// placed exactly (`exact`: this process made it, so the monotonic clock says how long
/// ago, and Twilio's answer had a `Date`), else [`CLOCK_SKEW_MS`] (after a restart a
/// clock stepped since the attempt cannot be measured; without `Date` neither can
/// Twilio's clock). The wide slack cannot take an identical earlier text of ours for
/// this one: those SIDs are `taken` (see [`find_match`]).
pub(crate) fn match_slack_ms(exact: bool) -> u64 {
    if exact {
        MEASURED_SKEW_SLACK_MS
    } else {
        CLOCK_SKEW_MS
    }
}

/// Where the attempt of a send sits on Twilio's clock, which is what the `DateSent>=`
/// filter and the listed `date_created` use.
///
/// - `stored_ms`: the attempt as our wall clock read it then (stored in the record).
/// - `since_attempt_ms`: how long ago the attempt was by the monotonic clock, when this
///   process made it. Our wall clock may have been stepped since (NTP after boot, an
///   operator): then `now - since` is where the attempt sits on the wall clock as it
///   reads now, and `stored_ms` is stale. After a restart only `stored_ms` is known.
/// - `twilio_minus_ours_ms`: how far Twilio's clock is ahead of ours now, measured from
///   its answer's `Date` header (negative: ours is ahead). Ours being minutes ahead made
///   a created message look older than the attempt, so it was not matched and was sent
///   a second time; being a day ahead put it outside the `DateSent>=` day.
///
/// Returns (the attempt on our wall clock as it reads now, the earliest the attempt can
/// be on Twilio's clock). With the monotonic time that is exact. Without it (after a
/// restart) we cannot tell whether the difference measured now already stood at the
/// attempt or came from a step since, so the earlier of the two readings is taken: the
/// window then admits both, and is never narrower than the stored time alone gave.
pub(crate) fn attempt_on_twilio_clock(
    stored_ms: u64,
    now_ms: u64,
    since_attempt_ms: Option<u64>,
    twilio_minus_ours_ms: Option<i64>,
) -> (u64, u64) {
    let ours = match since_attempt_ms {
        Some(since) => now_ms.saturating_sub(since),
        None => stored_ms,
    };
    let shifted = match twilio_minus_ours_ms {
        Some(d) if d >= 0 => ours.saturating_add(d.unsigned_abs()),
        Some(d) => ours.saturating_sub(d.unsigned_abs()),
        None => ours,
    };
    let theirs = match since_attempt_ms {
        Some(_) => shifted,
        None => shifted.min(ours),
    };
    (ours, theirs)
}

/// When a lookup stored as due at `stored_due_ms` is due on the wall clock as it reads
/// now: `remaining_ms` from now by the monotonic clock when this process scheduled it
/// (a wall clock stepped since does not move it), else as stored.
pub(crate) fn due_on_wall_clock(stored_due_ms: u64, now_ms: u64, remaining_ms: Option<u64>) -> u64 {
    match remaining_ms {
        Some(r) => now_ms.saturating_add(r),
        None => stored_due_ms,
    }
}

/// The `DateSent>=` value for a lookup: the UTC date of the attempt, a day earlier when
/// the attempt was close to midnight (clock skew between us and Twilio).
pub(crate) fn date_sent_from(attempt_ms: u64) -> String {
    let from = attempt_ms.saturating_sub(CLOCK_SKEW_MS);
    let t = time::OffsetDateTime::from_unix_timestamp((from / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// Who sent a message: our number, or our Messaging Service (which picks the number
/// itself, so its `from` says nothing and its `messaging_service_sid` decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SentBy<'a> {
    Number(&'a str),
    Service(&'a str),
}

/// What a send of unknown outcome is, for [`find_match`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wanted<'a> {
    pub to: &'a str,
    pub from: SentBy<'a>,
    pub body: &'a str,
    /// The earliest the attempt can be on Twilio's clock ([`attempt_on_twilio_clock`]).
    pub attempt_ms: u64,
    /// How much earlier a match may seem created ([`match_slack_ms`]).
    pub slack_ms: u64,
}

/// Our message among those listed: an outbound one to the same recipient, from the
/// same sender, with exactly our body, created no earlier than the attempt (less
/// `slack_ms`), and whose SID no other send holds (`taken`: SIDs recorded as sent by
/// another send; an identical earlier text must not be taken for this one, or this one
/// is never sent). A message missing `to`, `from` (for a number) or a readable
/// `date_created` cannot be shown to be ours, so it is not. The oldest such message
/// wins (of two unknown sends of the same text, the earlier attempt is looked up
/// first and takes the earlier message).
pub(crate) fn find_match<'a>(
    listed: &'a [Listed],
    wanted: &Wanted<'_>,
    taken: &HashSet<String>,
) -> Option<&'a Listed> {
    listed
        .iter()
        .filter(|m| m.direction.starts_with("outbound") || m.direction.is_empty())
        .filter(|m| m.to.as_deref() == Some(wanted.to))
        .filter(|m| match wanted.from {
            SentBy::Number(n) => m.from.as_deref() == Some(n),
            SentBy::Service(mg) => m.messaging_service_sid.as_deref() == Some(mg),
        })
        .filter(|m| m.body == wanted.body)
        .filter(|m| !taken.contains(&m.sid))
        .filter(|m| {
            m.created_ms
                .is_some_and(|c| c.saturating_add(wanted.slack_ms) >= wanted.attempt_ms)
        })
        .min_by_key(|m| m.created_ms)
}

/// Whether `listed` (newest first, as Twilio lists) reaches back past the attempt
/// (less [`CLOCK_SKEW_MS`]): everything after it is older still and cannot be the
/// send, so a lookup stops reading pages there (a listing that ignores `DateSent>=`
/// would otherwise be read to the page cap every time).
pub(crate) fn reaches_before(listed: &[Listed], attempt_ms: u64) -> bool {
    listed
        .iter()
        .any(|m| m.created_ms.is_some_and(|c| c + CLOCK_SKEW_MS < attempt_ms))
}

/// Whether a listing that found no match proves the message was not created. Twilio
/// lists newest first, so a listing cut short (page cap, a `next_page_uri` we do not
/// follow) proves it only when what it did read reaches back past the attempt (less the
/// clock slack): everything unread is older still. Otherwise the answer is "not known
/// yet", never "not created" (that would send blind). `Err` says why.
pub(crate) fn no_match_proves_absence(
    listed: &[Listed],
    complete: bool,
    attempt_ms: u64,
) -> Result<(), String> {
    if complete || reaches_before(listed, attempt_ms) {
        Ok(())
    } else {
        Err(format!(
            "Twilio's list of our messages to this number since the attempt has more than the {} read, and the match may be further on",
            listed.len()
        ))
    }
}

/// Why a lookup failed, for the log and `queue list`, with what to do about it: Twilio's
/// own code's hint when it gave one, else a hint from the HTTP status (a 401 from a
/// proxy carries no Twilio code, but it still means the credentials).
pub(crate) fn describe_failure(e: &RestError) -> String {
    match e {
        RestError::Api(a) if a.hint().is_some() => a.to_string(),
        RestError::Api(a) => {
            let code = match a.http_status {
                401 | 403 => Some(20003),
                404 => Some(20404),
                _ => None,
            };
            match code.and_then(super::hints::hint) {
                Some(h) => format!("{a}. Hint: {h}"),
                None => a.to_string(),
            }
        }
        RestError::Unavailable(why) => why.clone(),
    }
}

/// Where a send of unknown outcome stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Waiting for the first check.
    Unknown,
    /// The first check found nothing; waiting for the second.
    Checking,
}

/// What a lookup came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LookupOutcome {
    Found(String),
    NotFound,
    /// Twilio unreachable, an error, or an unreadable answer.
    Failed,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing yet: look up at this time (ms since the epoch).
    LookupAt(u64),
    /// It was sent: record this SID, tell the agent `sent`.
    Found(String),
    /// Twilio never created it: send it (once).
    Resend,
}

/// When the next lookup for a send attempted at `attempt_ms` is due, before any lookup
/// has run.
#[cfg(test)]
pub(crate) fn first_step(attempt_ms: u64) -> Step {
    Step::LookupAt(attempt_ms + FIRST_CHECK_MS)
}

/// The settle time actually in force: [`FIRST_CHECK_MS`], or
/// `SMSGATE_UNKNOWN_SETTLE_MS` (tests; the second check stays 5 times it).
pub(crate) fn settle_ms() -> u64 {
    crate::clock::env_span("SMSGATE_UNKNOWN_SETTLE_MS").unwrap_or(FIRST_CHECK_MS)
}

/// When the first lookup of a send attempted at `attempt_ms` runs.
pub(crate) fn first_check_at(attempt_ms: u64) -> u64 {
    attempt_ms + settle_ms()
}

/// The wait after `failures` failed lookups in a row: 30 s doubling at the default
/// settle time (an eighth of it, doubled per failure; tests shorten both together), at
/// most [`MAX_LOOKUP_BACKOFF_MS`] and at most 1024 eighths of the settle time.
fn lookup_backoff_ms(failures: u32, settle: u64) -> u64 {
    let base = Duration::from_millis((settle / 8).max(1));
    let schedule = Backoff {
        first: base,
        factor: 2,
        cap: base
            .saturating_mul(1 << 10)
            .min(Duration::from_millis(MAX_LOOKUP_BACKOFF_MS)),
        jitter: Jitter::None,
        retry_after: RetryAfter::Ignore,
    };
    // The first failure waits two eighths: `failures` steps from one eighth.
    schedule.delay(failures.saturating_add(1)).as_millis() as u64
}

/// The decision after a lookup at `now` in `stage` (`failures`: lookups that failed in a
/// row, this one included when it failed; `settle`: the first check's delay, the second
/// comes at five times it).
pub(crate) fn after_lookup(
    stage: Stage,
    outcome: LookupOutcome,
    attempt_ms: u64,
    now: u64,
    failures: u32,
    settle: u64,
) -> (Stage, Step) {
    match outcome {
        LookupOutcome::Found(sid) => (stage, Step::Found(sid)),
        LookupOutcome::Failed => (
            stage,
            Step::LookupAt(now + lookup_backoff_ms(failures, settle)),
        ),
        LookupOutcome::NotFound => match stage {
            Stage::Unknown => {
                // The second check: at 5× settle after the attempt, and never sooner
                // than 4× settle after this one. A first check that ran late (a
                // restart, Twilio down, or the wall clock stepped forward, which makes
                // "10 minutes after the attempt" come at once) is not the late check:
                // a message Twilio still holds unsent has no `DateSent` and is not
                // listed, so only two lookups that far apart both finding nothing
                // prove it was never created.
                let ratio = SECOND_CHECK_MS / FIRST_CHECK_MS;
                let second = (attempt_ms + settle * ratio).max(now + settle * (ratio - 1));
                (Stage::Checking, Step::LookupAt(second))
            }
            Stage::Checking => (Stage::Checking, Step::Resend),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TO: &str = "+15557650000";
    const US: &str = "+15550001111";

    fn listed(sid: &str, body: &str, created_ms: Option<u64>, dir: &str) -> Listed {
        Listed {
            sid: sid.into(),
            to: Some(TO.into()),
            from: Some(US.into()),
            body: body.into(),
            created_ms,
            direction: dir.into(),
            messaging_service_sid: None,
        }
    }

    #[test]
    fn match_table() {
        let t0 = 1_800_000_000_000;
        let sec = 1000;
        let ours = listed("SM1", "hello", Some(t0 + sec), "outbound-api");
        let with = |f: &dyn Fn(&mut Listed)| {
            let mut m = ours.clone();
            f(&mut m);
            m
        };
        let wanted = |slack_ms| Wanted {
            to: TO,
            from: SentBy::Number(US),
            body: "hello",
            attempt_ms: t0,
            slack_ms,
        };
        let measured = match_slack_ms(true);
        let unmeasured = match_slack_ms(false);
        let none = HashSet::new();
        let first: HashSet<String> = ["SMfirst".to_string()].into();
        type Case<'a> = (
            &'a str,
            Vec<Listed>,
            u64,
            &'a HashSet<String>,
            Option<&'a str>,
        );
        let cases: Vec<Case> = vec![
            ("ours", vec![ours.clone()], measured, &none, Some("SM1")),
            (
                "another body",
                vec![listed("SM2", "hello!", Some(t0), "outbound-api")],
                measured,
                &none,
                None,
            ),
            (
                "inbound",
                vec![listed("SM3", "hello", Some(t0), "inbound")],
                measured,
                &none,
                None,
            ),
            (
                "another recipient",
                vec![with(&|m| m.to = Some("+15557659999".into()))],
                measured,
                &none,
                None,
            ),
            (
                "no recipient listed",
                vec![with(&|m| m.to = None)],
                measured,
                &none,
                None,
            ),
            (
                "from another number of the account",
                vec![with(&|m| m.from = Some("+15550002222".into()))],
                measured,
                &none,
                None,
            ),
            (
                "an hour before the attempt: an older identical text",
                vec![listed("SM4", "hello", Some(t0 - 3_600_000), "outbound-api")],
                unmeasured,
                &none,
                None,
            ),
            (
                "a minute before, Twilio's clock unmeasured: within the wide slack",
                vec![listed("SM5", "hello", Some(t0 - 60 * sec), "outbound-api")],
                unmeasured,
                &none,
                Some("SM5"),
            ),
            (
                "a minute before, Twilio's clock measured: an earlier text",
                vec![listed("SM5", "hello", Some(t0 - 60 * sec), "outbound-api")],
                measured,
                &none,
                None,
            ),
            (
                "a second before (whole-second dates), measured",
                vec![listed("SM5", "hello", Some(t0 - sec), "outbound-api")],
                measured,
                &none,
                Some("SM5"),
            ),
            (
                "no readable date: cannot be shown to be after the attempt",
                vec![listed("SM6", "hello", None, "outbound-api")],
                unmeasured,
                &none,
                None,
            ),
            (
                "the oldest of two candidates",
                vec![
                    listed("SM8", "hello", Some(t0 + 5 * sec), "outbound-api"),
                    listed("SM7", "hello", Some(t0 + sec), "outbound-reply"),
                ],
                measured,
                &none,
                Some("SM7"),
            ),
            (
                "the same text a moment earlier, sent by another send: not this one",
                vec![listed("SMfirst", "hello", Some(t0), "outbound-api")],
                unmeasured,
                &first,
                None,
            ),
            (
                "the earlier identical text is taken, this one is listed after it",
                vec![
                    listed("SMsecond", "hello", Some(t0 + sec), "outbound-api"),
                    listed("SMfirst", "hello", Some(t0), "outbound-api"),
                ],
                unmeasured,
                &first,
                Some("SMsecond"),
            ),
        ];
        for (name, list, slack, taken, want) in cases {
            let got = find_match(&list, &wanted(slack), taken).map(|m| m.sid.as_str());
            assert_eq!(got, want, "{name}");
        }
        // Through a Messaging Service: the service decides, not the pool number.
        let mut svc = with(&|m| m.from = Some("+15550003333".into()));
        svc.messaging_service_sid = Some("MG1".into());
        let by = |mg| Wanted {
            from: SentBy::Service(mg),
            ..wanted(measured)
        };
        assert!(find_match(std::slice::from_ref(&svc), &by("MG1"), &none).is_some());
        assert!(find_match(std::slice::from_ref(&svc), &by("MG2"), &none).is_none());
        assert!(find_match(std::slice::from_ref(&ours), &by("MG1"), &none).is_none());
    }

    #[test]
    fn a_listing_reaches_before_the_attempt() {
        let t0 = 1_800_000_000_000;
        let at = |ms| listed("SM1", "x", Some(ms), "outbound-api");
        let cases = [
            ("empty", vec![], false),
            ("newer only", vec![at(t0 + 1)], false),
            ("within the slack", vec![at(t0 - CLOCK_SKEW_MS)], false),
            (
                "undated",
                vec![listed("SM2", "x", None, "outbound-api")],
                false,
            ),
            ("older", vec![at(t0 + 1), at(t0 - CLOCK_SKEW_MS - 1)], true),
        ];
        for (name, list, want) in cases {
            assert_eq!(reaches_before(&list, t0), want, "{name}");
        }
    }

    #[test]
    fn steps_table() {
        use LookupOutcome::*;
        use Stage::*;
        let a = 1_000_000;
        assert_eq!(first_step(a), Step::LookupAt(a + FIRST_CHECK_MS));
        let cases = [
            (
                Unknown,
                Found("SM1".into()),
                a + FIRST_CHECK_MS,
                0,
                (Unknown, Step::Found("SM1".into())),
            ),
            (
                Unknown,
                NotFound,
                a + FIRST_CHECK_MS,
                0,
                (Checking, Step::LookupAt(a + SECOND_CHECK_MS)),
            ),
            // A late first check (restart, outage, the clock stepped forward) is not
            // the second: that still comes, 4× settle later.
            (
                Unknown,
                NotFound,
                a + SECOND_CHECK_MS + 1,
                0,
                (
                    Checking,
                    Step::LookupAt(a + SECOND_CHECK_MS + 1 + 4 * FIRST_CHECK_MS),
                ),
            ),
            (
                Unknown,
                NotFound,
                a + FIRST_CHECK_MS + 60_000,
                0,
                (
                    Checking,
                    Step::LookupAt(a + FIRST_CHECK_MS + 60_000 + 4 * FIRST_CHECK_MS),
                ),
            ),
            (
                Checking,
                NotFound,
                a + SECOND_CHECK_MS,
                0,
                (Checking, Step::Resend),
            ),
            (
                Checking,
                Found("SM2".into()),
                a + SECOND_CHECK_MS,
                0,
                (Checking, Step::Found("SM2".into())),
            ),
            (
                Unknown,
                Failed,
                a + FIRST_CHECK_MS,
                1,
                (Unknown, Step::LookupAt(a + FIRST_CHECK_MS + 30_000)),
            ),
            (
                Checking,
                Failed,
                a,
                30,
                (Checking, Step::LookupAt(a + MAX_LOOKUP_BACKOFF_MS)),
            ),
        ];
        for (stage, outcome, now, failures, want) in cases {
            assert_eq!(
                after_lookup(stage, outcome.clone(), a, now, failures, FIRST_CHECK_MS),
                want,
                "{stage:?} {outcome:?}"
            );
        }
    }

    #[test]
    fn the_attempt_on_twilios_clock() {
        let t = 1_800_000_000_000u64;
        let min = 60_000u64;
        let cases = [
            // (stored, now, since the attempt by the monotonic clock, Twilio − ours, want)
            (
                "nothing known: as stored",
                t,
                t + 2 * min,
                None,
                None,
                (t, t),
            ),
            (
                "same process, clock untouched",
                t,
                t + 2 * min,
                Some(2 * min),
                Some(0),
                (t, t),
            ),
            (
                "the wall clock stepped back 20 min since the attempt",
                t,
                t - 18 * min,
                Some(2 * min),
                None,
                (t - 20 * min, t - 20 * min),
            ),
            (
                "the wall clock stepped forward an hour since the attempt",
                t,
                t + 62 * min,
                Some(2 * min),
                None,
                (t + 60 * min, t + 60 * min),
            ),
            (
                "ours is 20 min ahead of Twilio's",
                t,
                t + 2 * min,
                None,
                Some(-20 * min as i64),
                (t, t - 20 * min),
            ),
            (
                "ours is a day behind Twilio's (or was stepped back a day since): \
                 either way the attempt is no later than it was stored",
                t,
                t + 2 * min,
                None,
                Some(86_400_000),
                (t, t),
            ),
            (
                "the same, measured in the process that made the attempt: exact",
                t,
                t + 2 * min,
                Some(2 * min),
                Some(86_400_000),
                (t, t + 86_400_000),
            ),
            (
                "stepped back 20 min since the attempt, and now 20 min behind Twilio",
                t,
                t - 18 * min,
                Some(2 * min),
                Some(20 * min as i64),
                (t - 20 * min, t),
            ),
            ("no underflow", 5, 10, Some(100), Some(-1000), (0, 0)),
        ];
        for (name, stored, now, since, skew, want) in cases {
            assert_eq!(
                attempt_on_twilio_clock(stored, now, since, skew),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn a_list_cut_short_proves_nothing_unless_it_reaches_past_the_attempt() {
        let t0 = 1_800_000_000_000;
        let newer = listed("SM1", "other", Some(t0 + 1000), "outbound-api");
        let at_attempt = listed("SM2", "other", Some(t0 - 60_000), "outbound-api");
        let older = listed("SM3", "other", Some(t0 - CLOCK_SKEW_MS - 1), "outbound-api");
        let undated = listed("SM4", "other", None, "outbound-api");
        let cases = [
            ("complete, empty", vec![], true, true),
            ("complete", vec![newer.clone()], true, true),
            ("cut short, empty", vec![], false, false),
            ("cut short, all newer", vec![newer.clone()], false, false),
            (
                "cut short, within the slack",
                vec![newer.clone(), at_attempt],
                false,
                false,
            ),
            ("cut short, undated", vec![undated], false, false),
            (
                "cut short, but read back past the attempt",
                vec![newer, older],
                false,
                true,
            ),
        ];
        for (name, list, complete, proven) in cases {
            assert_eq!(
                no_match_proves_absence(&list, complete, t0).is_ok(),
                proven,
                "{name}"
            );
        }
    }

    #[test]
    fn due_times_follow_the_monotonic_clock() {
        let t = 1_800_000_000_000u64;
        let min = 60_000u64;
        let cases = [
            (
                "after a restart: as stored",
                t + 2 * min,
                t,
                None,
                t + 2 * min,
            ),
            (
                "clock untouched",
                t + 2 * min,
                t,
                Some(2 * min),
                t + 2 * min,
            ),
            (
                "stepped back an hour: not an hour late",
                t + 2 * min,
                t - 60 * min,
                Some(2 * min),
                t - 58 * min,
            ),
            (
                "stepped forward an hour: not at once",
                t + 8 * min,
                t + 60 * min,
                Some(8 * min),
                t + 68 * min,
            ),
            ("overdue", t, t + min, Some(0), t + min),
        ];
        for (name, stored, now, remaining, want) in cases {
            assert_eq!(due_on_wall_clock(stored, now, remaining), want, "{name}");
        }
    }

    #[test]
    fn failed_lookups_say_what_to_do() {
        use crate::twilio::error::ApiError;
        let api = |status, code| {
            RestError::Api(ApiError {
                http_status: status,
                code,
                message: "nope".into(),
                more_info: None,
            })
        };
        let cases = [
            (api(401, Some(20003)), "authToken"),
            (api(401, None), "authToken"),
            (api(403, None), "authToken"),
            (api(404, Some(20404)), "accountSid"),
            (api(404, None), "accountSid"),
            (api(400, None), "Twilio answered 400: nope"),
            (
                RestError::Unavailable("Twilio's answer is not JSON".into()),
                "not JSON",
            ),
        ];
        for (e, want) in cases {
            let got = describe_failure(&e);
            assert!(got.contains(want), "{e:?}: {got}");
        }
        assert!(!describe_failure(&api(400, None)).contains("Hint"));
    }

    #[test]
    fn lookup_backoff_as_before() {
        // The schedule before the shared helper (issue 21 item 7), for every settle
        // time the tests and the default use and beyond the exponent's clamp.
        let before = |failures: u32, settle: u64| {
            let base = (settle / 8).max(1);
            (base << failures.min(10)).min(MAX_LOOKUP_BACKOFF_MS)
        };
        for settle in [0, 1, 7, 8, 400, 800, 2_000, FIRST_CHECK_MS, 3_600_000] {
            for failures in (0..40).chain([u32::MAX]) {
                assert_eq!(
                    lookup_backoff_ms(failures, settle),
                    before(failures, settle),
                    "{failures} {settle}"
                );
            }
        }
        assert_eq!(lookup_backoff_ms(1, FIRST_CHECK_MS), 30_000);
    }

    #[test]
    fn a_failed_lookup_never_resends() {
        // Whatever the stage and however late, Failed only ever schedules another lookup.
        for stage in [Stage::Unknown, Stage::Checking] {
            for late in [0, SECOND_CHECK_MS, 100 * SECOND_CHECK_MS] {
                let (_, step) =
                    after_lookup(stage, LookupOutcome::Failed, 0, late, 3, FIRST_CHECK_MS);
                assert!(matches!(step, Step::LookupAt(_)), "{step:?}");
            }
        }
    }

    #[test]
    fn dates() {
        // 2026-12-01 00:01 UTC: a day earlier, for clock slack.
        assert_eq!(date_sent_from(1_796_083_260_000), "2026-11-30");
        assert_eq!(date_sent_from(1_796_126_400_000), "2026-12-01");
    }
}
