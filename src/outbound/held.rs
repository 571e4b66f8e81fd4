//! Saying that an `outboundLimits` window is full once per window, not once per held
//! send: an agent in a loop can have hundreds of sends held in an hour, and one log
//! line and one metric increment per (account, limit, window) tell the operator what
//! happened without drowning the log. Every held send still tells its own author (the
//! agent's `error` line); that is the sender's job, not decided here.
//!
//! The windows are the limits' own spans (an hour, or a day for `perDay`), counted from
//! the hold that was announced. The memory of what was announced is in the sender only,
//! not in the store: after a restart the first hold of each (account, limit) is
//! announced again, so a restart costs at most one extra log line and one extra
//! increment per (account, limit). That is the accepted price of not writing a record
//! on every hold.

use std::collections::HashMap;

use crate::limits::Limit;

/// `outboundLimits.maxHeld` by default: held sends kept at once per account. A day of
/// `perDay: 1000` held is as much as an operator reviews by hand; 60,000 took 188 MB
/// of memory and a 290 MB store (issue 20 item 7).
pub(crate) const DEFAULT_MAX_HELD: u32 = 1000;

/// What to do with a send over an `outboundLimits` window, given how many of the
/// account's sends are held already and `outboundLimits.maxHeld` (0 = no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Keep it, held.
    Hold,
    /// The cap is reached: refuse it and store nothing.
    Refuse,
}

/// The decision for a send that would be held (`already_held`: the account's held
/// sends, not counting this one; `coming`: the other parts of the same reply or send
/// not held yet, which would be held after it: a text is held or refused as a whole,
/// never half).
pub(crate) fn overflow(already_held: usize, coming: usize, max_held: u32) -> Overflow {
    if max_held != 0 && already_held.saturating_add(coming) >= max_held as usize {
        Overflow::Refuse
    } else {
        Overflow::Hold
    }
}

/// What the agent (or `message send`) hears when a send is refused at the cap.
/// `over`: why it would be held (an `outboundLimits` key, or WhatsApp's window).
pub(crate) fn refused_message(over: &str, max_held: u32) -> String {
    format!(
        "refused, not held: over {over} and {max_held} sends are already held for this account (outboundLimits.maxHeld = {max_held}); nothing was stored. Release or purge held sends (`smsgate queue list`, `smsgate queue release --all`), or raise outboundLimits.maxHeld"
    )
}

/// How often the log says the cap was reached, per account.
pub(crate) const MAX_HELD_ANNOUNCE_MS: u64 = HOUR_MS;

const HOUR_MS: u64 = 60 * 60 * 1000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// How long one announcement of `limit` covers: the limit's own window.
pub(crate) fn span_ms(limit: Limit) -> u64 {
    match limit {
        Limit::PerHour | Limit::PerRecipientPerHour => HOUR_MS,
        Limit::PerDay => DAY_MS,
    }
}

/// The label of `limit` in metrics and log lines (`perHour`, …).
pub(crate) fn label(limit: Limit) -> &'static str {
    let key = limit.key();
    key.strip_prefix("outboundLimits.").unwrap_or(key)
}

/// Whether a hold at `now` is the first in its window, given when this (account, limit)
/// was last announced: never, a whole span ago or more, or "in the future" (the wall
/// clock stepped back since: announcing once more beats staying silent until the clock
/// catches up, which could be a day).
pub(crate) fn is_new_window(last_announced_ms: Option<u64>, span_ms: u64, now: u64) -> bool {
    match last_announced_ms {
        None => true,
        Some(last) => now < last || now >= last.saturating_add(span_ms),
    }
}

/// What the sender remembers about announced holds: (account, limit key) → when.
#[derive(Debug, Default)]
pub(crate) struct Announced {
    last: HashMap<(String, &'static str), u64>,
}

impl Announced {
    /// Whether to announce a hold of `limit` for `account` at `now`; remembers it when so.
    pub(crate) fn announce(&mut self, account: &str, limit: Limit, now: u64) -> bool {
        let key = (account.to_string(), limit.key());
        let new = is_new_window(self.last.get(&key).copied(), span_ms(limit), now);
        if new {
            self.last.insert(key, now);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_window_table() {
        let t = 10 * DAY_MS;
        let cases = [
            ("never announced", None, HOUR_MS, t, true),
            ("same instant", Some(t), HOUR_MS, t, false),
            ("within the hour", Some(t), HOUR_MS, t + HOUR_MS - 1, false),
            ("the hour is over", Some(t), HOUR_MS, t + HOUR_MS, true),
            ("long after", Some(t), HOUR_MS, t + 5 * DAY_MS, true),
            ("within the day", Some(t), DAY_MS, t + 23 * HOUR_MS, false),
            ("the day is over", Some(t), DAY_MS, t + DAY_MS, true),
            ("the clock stepped back", Some(t), HOUR_MS, t - 1, true),
            (
                "no overflow at the end of time",
                Some(u64::MAX - DAY_MS),
                DAY_MS,
                u64::MAX - 1,
                false,
            ),
        ];
        for (name, last, span, now, want) in cases {
            assert_eq!(is_new_window(last, span, now), want, "{name}");
        }
    }

    #[test]
    fn overflow_table() {
        let cases = [
            ("none held", 0, 0, 1000, Overflow::Hold),
            ("below the cap", 999, 0, 1000, Overflow::Hold),
            ("at the cap", 1000, 0, 1000, Overflow::Refuse),
            (
                "over it (lowered by a reload)",
                5000,
                0,
                1000,
                Overflow::Refuse,
            ),
            ("a cap of 1", 1, 0, 1, Overflow::Refuse),
            ("a three-part text fits", 2, 2, 5, Overflow::Hold),
            (
                "its last part would not: the whole text",
                3,
                2,
                5,
                Overflow::Refuse,
            ),
            ("0 = no cap", 1_000_000, 9, 0, Overflow::Hold),
            ("no overflow", usize::MAX, usize::MAX, 1, Overflow::Refuse),
        ];
        for (name, held, coming, max, want) in cases {
            assert_eq!(overflow(held, coming, max), want, "{name}");
        }
        let m = refused_message(Limit::PerHour.key(), 3);
        assert!(
            m.contains("outboundLimits.maxHeld = 3") && m.contains("outboundLimits.perHour"),
            "{m}"
        );
    }

    #[test]
    fn once_per_account_limit_and_window() {
        let t = 10 * DAY_MS;
        let mut a = Announced::default();
        assert!(a.announce("default", Limit::PerHour, t));
        // A burst: the rest of the hour is quiet.
        for i in 1..100 {
            assert!(!a.announce("default", Limit::PerHour, t + i * 1000));
        }
        // Another limit, another account: each its own window.
        assert!(a.announce("default", Limit::PerDay, t + 5));
        assert!(a.announce("other", Limit::PerHour, t + 5));
        assert!(!a.announce("default", Limit::PerDay, t + 2 * HOUR_MS));
        // The next hour says so again, once.
        assert!(a.announce("default", Limit::PerHour, t + HOUR_MS));
        assert!(!a.announce("default", Limit::PerHour, t + HOUR_MS + 1));
        assert_eq!(label(Limit::PerRecipientPerHour), "perRecipientPerHour");
    }
}
