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

use serde_json::Value;

/// How long after the attempt the first lookup runs.
pub const FIRST_CHECK_MS: u64 = 2 * 60 * 1000;
/// How long after the attempt the second (last) lookup runs.
pub const SECOND_CHECK_MS: u64 = 10 * 60 * 1000;
/// Backoff between lookups that failed (Twilio unreachable), at most.
pub const MAX_LOOKUP_BACKOFF_MS: u64 = 5 * 60 * 1000;
/// Slack for clocks: a listed message created this long before the attempt still counts.
/// Small on purpose (a wider window could take an identical earlier text for this one):
/// a known difference between our clock and Twilio's is corrected first (see
/// [`attempt_on_twilio_clock`]), so this only covers what cannot be measured.
pub const CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

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
pub fn attempt_on_twilio_clock(
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
pub fn due_on_wall_clock(stored_due_ms: u64, now_ms: u64, remaining_ms: Option<u64>) -> u64 {
    match remaining_ms {
        Some(r) => now_ms.saturating_add(r),
        None => stored_due_ms,
    }
}

/// One message from Twilio's list, the fields the match needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub sid: String,
    pub body: String,
    /// Milliseconds since the epoch, from `date_created` (RFC 2822), if readable.
    pub created_ms: Option<u64>,
    pub direction: String,
    pub messaging_service_sid: Option<String>,
}

/// Reads one page of `Messages.json`: the messages and the next page's URI.
pub fn parse_page(v: &Value) -> Result<(Vec<Listed>, Option<String>), String> {
    let list = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("Twilio's message list has no \"messages\" array")?;
    let s = |m: &Value, k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    let messages = list
        .iter()
        .filter_map(|m| {
            Some(Listed {
                sid: s(m, "sid")?,
                body: s(m, "body").unwrap_or_default(),
                created_ms: s(m, "date_created").and_then(|d| parse_rfc2822_ms(&d)),
                direction: s(m, "direction").unwrap_or_default(),
                messaging_service_sid: s(m, "messaging_service_sid"),
            })
        })
        .collect();
    let next = s(v, "next_page_uri").filter(|u| !u.is_empty());
    Ok((messages, next))
}

fn parse_rfc2822_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc2822).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The `DateSent>=` value for a lookup: the UTC date of the attempt, a day earlier when
/// the attempt was close to midnight (clock skew between us and Twilio).
pub fn date_sent_from(attempt_ms: u64) -> String {
    let from = attempt_ms.saturating_sub(CLOCK_SKEW_MS);
    let t = time::OffsetDateTime::from_unix_timestamp((from / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// Our message among those listed: an outbound one with exactly our body, created no
/// earlier than the attempt (less clock slack), from our Messaging Service when we sent
/// through one, and not a message we already know we sent (`known` SIDs: an identical
/// earlier text must not be taken for this one). The oldest such message wins.
pub fn find_match<'a>(
    listed: &'a [Listed],
    body: &str,
    attempt_ms: u64,
    service: Option<&str>,
    known: &HashSet<String>,
) -> Option<&'a Listed> {
    listed
        .iter()
        .filter(|m| m.direction.starts_with("outbound") || m.direction.is_empty())
        .filter(|m| m.body == body)
        .filter(|m| !known.contains(&m.sid))
        .filter(|m| service.is_none_or(|s| m.messaging_service_sid.as_deref() == Some(s)))
        .filter(|m| m.created_ms.is_none_or(|c| c + CLOCK_SKEW_MS >= attempt_ms))
        .min_by_key(|m| m.created_ms.unwrap_or(u64::MAX))
}

/// Whether a listing that found no match proves the message was not created. Twilio
/// lists newest first, so a listing cut short (page cap, a `next_page_uri` we do not
/// follow) proves it only when what it did read reaches back past the attempt (less the
/// clock slack): everything unread is older still. Otherwise the answer is "not known
/// yet", never "not created" (that would send blind). `Err` says why.
pub fn no_match_proves_absence(
    listed: &[Listed],
    complete: bool,
    attempt_ms: u64,
) -> Result<(), String> {
    if complete {
        return Ok(());
    }
    let reaches_back = listed
        .iter()
        .any(|m| m.created_ms.is_some_and(|c| c + CLOCK_SKEW_MS < attempt_ms));
    if reaches_back {
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
pub fn describe_failure(e: &super::client::RestError) -> String {
    use super::client::RestError;
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
pub enum Stage {
    /// Waiting for the first check.
    Unknown,
    /// The first check found nothing; waiting for the second.
    Checking,
}

/// What a lookup came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupOutcome {
    Found(String),
    NotFound,
    /// Twilio unreachable, an error, or an unreadable answer.
    Failed,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet: look up at this time (ms since the epoch).
    LookupAt(u64),
    /// It was sent: record this SID, tell the agent `sent`.
    Found(String),
    /// Twilio never created it: send it (once).
    Resend,
}

/// When the next lookup for a send attempted at `attempt_ms` is due, before any lookup
/// has run.
pub fn first_step(attempt_ms: u64) -> Step {
    Step::LookupAt(attempt_ms + FIRST_CHECK_MS)
}

/// The settle time actually in force: [`FIRST_CHECK_MS`], or
/// `SMSGATE_UNKNOWN_SETTLE_MS` (tests; the second check stays 5 times it).
pub fn settle_ms() -> u64 {
    std::env::var("SMSGATE_UNKNOWN_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FIRST_CHECK_MS)
}

/// When the first lookup of a send attempted at `attempt_ms` runs.
pub fn first_check_at(attempt_ms: u64) -> u64 {
    attempt_ms + settle_ms()
}

/// The decision after a lookup at `now` in `stage` (`failures`: lookups that failed in a
/// row, this one included when it failed; `settle`: the first check's delay, the second
/// comes at five times it).
pub fn after_lookup(
    stage: Stage,
    outcome: LookupOutcome,
    attempt_ms: u64,
    now: u64,
    failures: u32,
    settle: u64,
) -> (Stage, Step) {
    match outcome {
        LookupOutcome::Found(sid) => (stage, Step::Found(sid)),
        LookupOutcome::Failed => {
            // 15 s doubling at the default settle time (tests shorten both together).
            let base = (settle / 8).max(1);
            let backoff = (base << failures.min(10)).min(MAX_LOOKUP_BACKOFF_MS);
            (stage, Step::LookupAt(now + backoff))
        }
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
    use serde_json::json;

    fn listed(sid: &str, body: &str, created_ms: Option<u64>, dir: &str) -> Listed {
        Listed {
            sid: sid.into(),
            body: body.into(),
            created_ms,
            direction: dir.into(),
            messaging_service_sid: None,
        }
    }

    #[test]
    fn match_table() {
        let t0 = 1_800_000_000_000;
        let none = HashSet::new();
        let ours = listed("SM1", "hello", Some(t0 + 1000), "outbound-api");
        let cases: Vec<(Vec<Listed>, Option<&str>)> = vec![
            (vec![ours.clone()], Some("SM1")),
            (
                vec![listed("SM2", "hello!", Some(t0), "outbound-api")],
                None,
            ),
            (vec![listed("SM3", "hello", Some(t0), "inbound")], None),
            // Long before the attempt: an older identical text.
            (
                vec![listed("SM4", "hello", Some(t0 - 3_600_000), "outbound-api")],
                None,
            ),
            // Within the clock slack.
            (
                vec![listed("SM5", "hello", Some(t0 - 60_000), "outbound-api")],
                Some("SM5"),
            ),
            // No readable date: body and direction decide.
            (
                vec![listed("SM6", "hello", None, "outbound-api")],
                Some("SM6"),
            ),
            // The oldest of two candidates.
            (
                vec![
                    listed("SM8", "hello", Some(t0 + 5000), "outbound-api"),
                    listed("SM7", "hello", Some(t0 + 1000), "outbound-reply"),
                ],
                Some("SM7"),
            ),
        ];
        for (list, want) in cases {
            let got = find_match(&list, "hello", t0, None, &none).map(|m| m.sid.as_str());
            assert_eq!(got, want, "{list:?}");
        }
        let known: HashSet<String> = ["SM1".to_string()].into();
        assert_eq!(
            find_match(std::slice::from_ref(&ours), "hello", t0, None, &known),
            None
        );
        let mut svc = ours.clone();
        svc.messaging_service_sid = Some("MG1".into());
        assert!(find_match(std::slice::from_ref(&svc), "hello", t0, Some("MG1"), &none).is_some());
        assert!(find_match(&[svc], "hello", t0, Some("MG2"), &none).is_none());
        assert!(find_match(&[ours], "hello", t0, Some("MG1"), &none).is_none());
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
        use crate::twilio::client::{ApiError, RestError};
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
    fn pages_and_dates() {
        let page = json!({
            "messages": [
                {"sid": "SM1", "body": "hi", "date_created": "Tue, 01 Dec 2026 12:00:00 +0000", "direction": "outbound-api"},
                {"body": "no sid: skipped"},
            ],
            "next_page_uri": "/2010-04-01/Accounts/AC1/Messages.json?Page=1",
        });
        let (list, next) = parse_page(&page).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].created_ms, Some(1_796_126_400_000));
        assert_eq!(
            next.as_deref(),
            Some("/2010-04-01/Accounts/AC1/Messages.json?Page=1")
        );
        assert!(parse_page(&json!({"messages": "x"})).is_err());
        assert!(parse_page(&json!([])).is_err());
        let (empty, next) = parse_page(&json!({"messages": [], "next_page_uri": null})).unwrap();
        assert!(empty.is_empty() && next.is_none());
        // 2026-12-01 00:01 UTC: a day earlier, for clock slack.
        assert_eq!(date_sent_from(1_796_083_260_000), "2026-11-30");
        assert_eq!(date_sent_from(1_796_126_400_000), "2026-12-01");
    }
}
