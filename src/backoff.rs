//! How long to wait before trying again: one pure schedule for every retry loop (the
//! Twilio sender, `message send`, unknown-send lookups, ACME, the OpenAI bridge, the
//! agent's retries), each with its own parameters. At the bottom of the module graph:
//! it imports nothing from the crate.
//!
//! A schedule waits `first` after the first failure, `factor` times longer after each
//! further one, never more than `cap`; optionally jittered, optionally honouring the
//! server's `Retry-After` ([`parse_retry_after`] reads the header).

use std::time::{Duration, SystemTime};

/// How the computed delay is spread, so that many clients failing together do not
/// retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Jitter {
    /// The delay as computed.
    None,
    /// Scaled into its upper half: `jitter` 0 gives half the delay, 1 all of it.
    UpperHalf,
}

/// What a server's `Retry-After` does to the delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryAfter {
    /// Not asked for, or not listened to.
    Ignore,
    /// The wait is at least what the server asked for (at most `cap`).
    AtLeast { cap: Duration },
    /// The wait is what the server asked for (at most `cap`), even when shorter.
    Instead { cap: Duration },
}

/// One retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// How much longer each further failure waits (2: doubling).
    pub factor: u32,
    /// The longest wait the schedule itself gives.
    pub cap: Duration,
    pub jitter: Jitter,
    pub retry_after: RetryAfter,
}

impl Backoff {
    /// The wait after `failures` failures in a row (1: the first; 0 counts as 1), with
    /// no jitter and no `Retry-After`.
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let steps = failures.saturating_sub(1);
        // Past what u32 can count, the schedule is at its cap anyway.
        self.factor
            .checked_pow(steps)
            .and_then(|m| self.first.checked_mul(m))
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The wait after `failures` failures in a row, jittered by `jitter` in [0, 1]
    /// (out of range: clamped; not a number: no jitter), with the server's
    /// `retry_after` applied as the schedule says.
    pub(crate) fn wait(
        &self,
        failures: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        let base = self.delay(failures);
        let jittered = match self.jitter {
            Jitter::None => base,
            Jitter::UpperHalf => {
                let j = if jitter.is_nan() {
                    1.0
                } else {
                    jitter.clamp(0.0, 1.0)
                };
                base.mul_f64(0.5 + 0.5 * j)
            }
        };
        match (self.retry_after, retry_after) {
            (RetryAfter::AtLeast { cap }, Some(ra)) => jittered.max(ra.min(cap)),
            (RetryAfter::Instead { cap }, Some(ra)) => ra.min(cap),
            _ => jittered,
        }
    }
}

/// A `Retry-After` header value (RFC 9110 §10.2.3): delay-seconds, or an HTTP date
/// (read with `httpdate`), as a wait from `now`; a date already past waits nothing.
/// `None` when it is neither.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn delay_table() {
        let doubling = Backoff {
            first: S(30),
            factor: 2,
            cap: S(3600),
            jitter: Jitter::None,
            retry_after: RetryAfter::Ignore,
        };
        let cases = [
            (0, 30),
            (1, 30),
            (2, 60),
            (3, 120),
            (7, 1920),
            (8, 3600),
            (40, 3600),
            (u32::MAX, 3600),
        ];
        for (failures, want) in cases {
            assert_eq!(doubling.delay(failures), S(want), "{failures}");
        }
        let flat = Backoff {
            factor: 1,
            ..doubling
        };
        assert_eq!(flat.delay(u32::MAX), S(30));
        let huge = Backoff {
            first: Duration::MAX,
            ..doubling
        };
        assert_eq!(huge.delay(1), S(3600));
    }

    #[test]
    fn wait_table() {
        let b = |jitter, retry_after| Backoff {
            first: S(1),
            factor: 2,
            cap: S(600),
            jitter,
            retry_after,
        };
        let at_least = RetryAfter::AtLeast { cap: S(3600) };
        let instead = RetryAfter::Instead { cap: S(600) };
        let ms = Duration::from_millis;
        let cases = [
            // (schedule, failures, Retry-After, jitter, want)
            (
                b(Jitter::None, RetryAfter::Ignore),
                3,
                Some(S(99)),
                0.0,
                S(4),
            ),
            (
                b(Jitter::UpperHalf, RetryAfter::Ignore),
                1,
                None,
                0.0,
                ms(500),
            ),
            (b(Jitter::UpperHalf, RetryAfter::Ignore), 1, None, 1.0, S(1)),
            (
                b(Jitter::UpperHalf, RetryAfter::Ignore),
                2,
                None,
                0.5,
                ms(1500),
            ),
            (
                b(Jitter::UpperHalf, RetryAfter::Ignore),
                1,
                None,
                -3.0,
                ms(500),
            ),
            (b(Jitter::UpperHalf, RetryAfter::Ignore), 1, None, 7.0, S(1)),
            (
                b(Jitter::UpperHalf, RetryAfter::Ignore),
                1,
                None,
                f64::NAN,
                S(1),
            ),
            (b(Jitter::UpperHalf, at_least), 1, Some(S(30)), 0.5, S(30)),
            (b(Jitter::UpperHalf, at_least), 5, Some(S(1)), 1.0, S(16)),
            (
                b(Jitter::UpperHalf, at_least),
                1,
                Some(S(99_999)),
                0.0,
                S(3600),
            ),
            (b(Jitter::None, instead), 6, Some(S(0)), 0.0, S(0)),
            (b(Jitter::None, instead), 1, Some(S(7)), 0.0, S(7)),
            (b(Jitter::None, instead), 1, Some(S(100_000)), 0.0, S(600)),
            (b(Jitter::None, instead), 5, None, 0.0, S(16)),
        ];
        for (schedule, failures, ra, jitter, want) in cases {
            assert_eq!(
                schedule.wait(failures, ra, jitter),
                want,
                "{schedule:?} {failures} {ra:?} {jitter}"
            );
        }
    }

    #[test]
    fn retry_after_values() {
        let now = SystemTime::UNIX_EPOCH + S(1_796_126_400); // Tue, 01 Dec 2026 12:00:00 GMT
        let cases = [
            ("120", Some(S(120))),
            (" 0 ", Some(S(0))),
            ("Tue, 01 Dec 2026 12:01:30 GMT", Some(S(90))),
            ("Tue, 01 Dec 2026 11:00:00 GMT", Some(S(0))),
            ("Tuesday, 01-Dec-26 12:00:10 GMT", Some(S(10))),
            ("-5", None),
            ("1.5", None),
            ("soon", None),
            ("", None),
            ("Tue, 01 Dec 2026 12:01:30 +0000", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, now), want, "{value:?}");
        }
    }
}
