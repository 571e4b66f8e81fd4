//! Spending guardrails: how many SMS segments an account may send per hour, per day
//! and per recipient per hour (`outboundLimits`), and how fast one approved sender's
//! texts may reach the agent (`inboundLimits.perSenderPerMinute`).
//!
//! An agent in a loop must not run up the bill, and one phone must not run up the
//! agent's model bill; but nothing is ever dropped: a send over a limit is held
//! (durably, by the caller) and an inbound text over its rate waits. The windows are
//! sliding; the decisions are pure functions of what was sent when.

use std::collections::{HashMap, VecDeque};

/// `inboundLimits.perSenderPerMinute` by default (as OpenClaw's channel has).
pub(crate) const DEFAULT_INBOUND_PER_MINUTE: u32 = 30;

const HOUR_MS: u64 = 60 * 60 * 1000;
const DAY_MS: u64 = 24 * HOUR_MS;
const MINUTE_MS: u64 = 60 * 1000;

/// `outboundLimits` of one account, in SMS segments; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundLimits {
    pub per_hour: u32,
    pub per_day: u32,
    pub per_recipient_per_hour: u32,
}

impl Default for OutboundLimits {
    /// Generous enough never to bother a person chatting with their agent.
    fn default() -> Self {
        Self {
            per_hour: 200,
            per_day: 1000,
            per_recipient_per_hour: 60,
        }
    }
}

impl OutboundLimits {
    /// Whether any limit is set (not every key 0).
    pub fn any(&self) -> bool {
        self.per_hour > 0 || self.per_day > 0 || self.per_recipient_per_hour > 0
    }
}

/// Which limit a send would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// The names are the config keys (perHour, perDay, perRecipientPerHour).
#[allow(clippy::enum_variant_names)]
pub(crate) enum Limit {
    PerHour,
    PerDay,
    PerRecipientPerHour,
}

impl Limit {
    /// The config key, for messages.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Limit::PerHour => "outboundLimits.perHour",
            Limit::PerDay => "outboundLimits.perDay",
            Limit::PerRecipientPerHour => "outboundLimits.perRecipientPerHour",
        }
    }
}

/// The verdict on one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Send,
    /// Over `limit` (`max` segments); the window has room again at `until_ms` (for
    /// `releaseHeld: "auto"`), or never for a send larger than the limit itself.
    Hold {
        limit: Limit,
        max: u32,
        until_ms: Option<u64>,
    },
}

/// Segments sent per minute, `(minute number since the epoch, segments)`, oldest
/// first: the summary the windows count instead of one entry per send, so a day of
/// sends costs at most 1,440 entries however many there were.
#[derive(Debug, Clone, Default)]
struct Minutes(VecDeque<(u64, u32)>);

/// The first millisecond after minute `m`.
fn minute_end(m: u64) -> u64 {
    (m + 1) * MINUTE_MS
}

impl Minutes {
    fn add(&mut self, minute: u64, segments: u32) {
        // Nearly always the newest minute; a rebuild may come in any order.
        match self.0.back().map(|(m, _)| *m) {
            Some(m) if m == minute => {
                if let Some(last) = self.0.back_mut() {
                    last.1 = last.1.saturating_add(segments);
                }
            }
            Some(m) if m > minute => match self.0.binary_search_by_key(&minute, |(m, _)| *m) {
                Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(segments),
                Err(i) => self.0.insert(i, (minute, segments)),
            },
            _ => self.0.push_back((minute, segments)),
        }
    }

    /// Drops the minutes that are wholly out of a window of `span` at `now`.
    fn forget(&mut self, span: u64, now: u64) {
        while self
            .0
            .front()
            .is_some_and(|(m, _)| minute_end(*m) + span <= now)
        {
            self.0.pop_front();
        }
    }

    /// The minutes that may still hold a send inside a window of `span` at `now`
    /// (a send counts until its whole minute has left the window: never fewer than
    /// the exact count, at most a minute longer), oldest first.
    fn within(&self, span: u64, now: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.0
            .iter()
            .copied()
            .filter(move |(m, _)| minute_end(*m) + span > now)
    }
}

/// One account's sends in the last day, summarised per minute: the account's total,
/// and, only while `perRecipientPerHour` is set, each recipient's in the last hour.
/// Memory is bounded by the windows' spans (1,440 minutes; the recipients of the last
/// hour), not by how many sends there were.
#[derive(Debug, Clone, Default)]
pub(crate) struct SendWindow {
    all: Minutes,
    /// `None`: recipients are not tracked (no per-recipient limit when it was built).
    recipients: Option<HashMap<String, Minutes>>,
    /// The minute the recipients were last swept of what left the hour.
    swept: u64,
}

impl SendWindow {
    /// An empty window; `recipients`: whether to track each recipient's hour (needed
    /// for `perRecipientPerHour` only).
    pub(crate) fn new(recipients: bool) -> Self {
        Self {
            recipients: recipients.then(HashMap::new),
            ..Self::default()
        }
    }

    /// Whether each recipient's hour is tracked.
    pub(crate) fn tracks_recipients(&self) -> bool {
        self.recipients.is_some()
    }

    /// How many per-minute entries the window holds (the account's and every
    /// recipient's): its memory, for tests and bounds.
    pub(crate) fn entries(&self) -> usize {
        self.all.0.len()
            + self
                .recipients
                .as_ref()
                .map_or(0, |r| r.values().map(|m| m.0.len()).sum())
    }

    /// Records a send that went out (rebuilt at start from the finished sends, in any
    /// order).
    pub(crate) fn record(&mut self, at_ms: u64, to: &str, segments: u32) {
        let minute = at_ms / MINUTE_MS;
        self.all.add(minute, segments);
        if let Some(r) = &mut self.recipients {
            match r.get_mut(to) {
                Some(m) => m.add(minute, segments),
                None => {
                    let mut m = Minutes::default();
                    m.add(minute, segments);
                    r.insert(to.to_string(), m);
                }
            }
        }
    }

    /// Forgets what left the day (the account) and the hour (the recipients; swept
    /// at most once a minute, since that walks every recipient of the hour).
    fn forget_before(&mut self, now: u64) {
        self.all.forget(DAY_MS, now);
        let minute = now / MINUTE_MS;
        if let Some(r) = &mut self.recipients {
            if minute != self.swept {
                r.retain(|_, m| {
                    m.forget(HOUR_MS, now);
                    !m.0.is_empty()
                });
                r.shrink_to_fit();
                self.swept = minute;
            }
        }
    }

    /// Whether a send of `segments` to `to` fits at `now`; forgets what is older than
    /// a day. A per-recipient limit needs a window that tracks recipients
    /// ([`SendWindows`] sees to that); an untracked one counts nothing for it.
    pub(crate) fn check(
        &mut self,
        limits: &OutboundLimits,
        to: &str,
        segments: u32,
        now: u64,
    ) -> Verdict {
        self.forget_before(now);
        let recipient = self.recipients.as_ref().and_then(|r| r.get(to));
        let empty = Minutes::default();
        let checks = [
            (
                Limit::PerRecipientPerHour,
                limits.per_recipient_per_hour,
                HOUR_MS,
                recipient.unwrap_or(&empty),
            ),
            (Limit::PerHour, limits.per_hour, HOUR_MS, &self.all),
            (Limit::PerDay, limits.per_day, DAY_MS, &self.all),
        ];
        for (limit, max, span, minutes) in checks {
            if max == 0 {
                continue;
            }
            let used: u32 = minutes
                .within(span, now)
                .fold(0u32, |a, (_, n)| a.saturating_add(n));
            if used.saturating_add(segments) <= max {
                continue;
            }
            // When enough of the window has slid out for this send to fit.
            let until_ms = if segments > max {
                None
            } else {
                let mut freed = 0u32;
                let need = used + segments - max;
                minutes.within(span, now).find_map(|(m, n)| {
                    freed = freed.saturating_add(n);
                    (freed >= need).then_some(minute_end(m) + span)
                })
            };
            return Verdict::Hold {
                limit,
                max,
                until_ms,
            };
        }
        Verdict::Send
    }
}

/// Every account's [`SendWindow`], kept only while the account has a limit set: with
/// every `outboundLimits` key 0 nothing is kept, and nothing is read at start. A window
/// is built from the sent log (the caller's `fill`) the first time a limit needs it,
/// and again when `perRecipientPerHour` is turned on (a reload), so a limit set later
/// still counts the day that went before.
#[derive(Debug, Default)]
pub(crate) struct SendWindows {
    by_account: HashMap<String, SendWindow>,
}

impl SendWindows {
    /// The verdict on a send; `fill` records the account's sends of the last day into
    /// a new window (called only when one is needed).
    pub(crate) fn check(
        &mut self,
        account: &str,
        limits: &OutboundLimits,
        to: &str,
        segments: u32,
        now: u64,
        fill: impl FnOnce(&mut SendWindow),
    ) -> Verdict {
        if !limits.any() {
            self.by_account.remove(account);
            return Verdict::Send;
        }
        let recipients = limits.per_recipient_per_hour > 0;
        let usable = self
            .by_account
            .get(account)
            .is_some_and(|w| w.tracks_recipients() || !recipients);
        if !usable {
            let mut w = SendWindow::new(recipients);
            fill(&mut w);
            self.by_account.insert(account.to_string(), w);
        }
        let Some(w) = self.by_account.get_mut(account) else {
            return Verdict::Send;
        };
        if !recipients && w.tracks_recipients() {
            // The per-recipient limit was turned off: its memory goes.
            w.recipients = None;
        }
        w.check(limits, to, segments, now)
    }

    /// Records a send that went out, in the account's window if it has one (one built
    /// later reads it from the sent log).
    pub(crate) fn record(&mut self, account: &str, at_ms: u64, to: &str, segments: u32) {
        if let Some(w) = self.by_account.get_mut(account) {
            w.record(at_ms, to, segments);
        }
    }

    /// The window of `account`, if one is kept.
    #[cfg(test)]
    pub(crate) fn window(&self, account: &str) -> Option<&SendWindow> {
        self.by_account.get(account)
    }
}

/// When the next text from one sender may reach the agent, given when the earlier ones
/// did (oldest first) and the per-minute limit (0: no limit): `None` means now.
pub(crate) fn inbound_release_at(delivered_ms: &[u64], per_minute: u32, now: u64) -> Option<u64> {
    if per_minute == 0 {
        return None;
    }
    let recent: Vec<u64> = delivered_ms
        .iter()
        .copied()
        .filter(|t| t + MINUTE_MS > now)
        .collect();
    if recent.len() < per_minute as usize {
        return None;
    }
    // The slot frees when the oldest delivery that keeps us at the limit leaves the minute.
    let oldest_blocking = recent[recent.len() - per_minute as usize];
    Some(oldest_blocking + MINUTE_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "+15557650001";
    const B: &str = "+15557650002";

    #[test]
    fn outbound_table() {
        let lim = OutboundLimits {
            per_hour: 10,
            per_day: 15,
            per_recipient_per_hour: 4,
        };
        // On a minute boundary: a send counts until its whole minute has left the
        // window, so the times below are the minute's end plus the span.
        let t0 = 10 * DAY_MS;
        let mut w = SendWindow::new(true);
        // Four single-segment texts to A fill A's hour.
        for i in 0..4 {
            assert_eq!(w.check(&lim, A, 1, t0 + i), Verdict::Send);
            w.record(t0 + i, A, 1);
        }
        assert_eq!(
            w.check(&lim, A, 1, t0 + 10),
            Verdict::Hold {
                limit: Limit::PerRecipientPerHour,
                max: 4,
                until_ms: Some(t0 + MINUTE_MS + HOUR_MS)
            }
        );
        // B is someone else: fine, until the account's hour is full (segments count).
        assert_eq!(w.check(&lim, B, 3, t0 + 10), Verdict::Send);
        w.record(t0 + 10, B, 3);
        assert_eq!(w.check(&lim, B, 1, t0 + 11), Verdict::Send);
        w.record(t0 + 11, B, 1);
        // 8 used this hour; a 3-segment text (to a third person, whose own hour is
        // empty) needs 1 more freed: the first minute's.
        assert_eq!(
            w.check(&lim, "+15557650003", 3, t0 + 12),
            Verdict::Hold {
                limit: Limit::PerHour,
                max: 10,
                until_ms: Some(t0 + MINUTE_MS + HOUR_MS)
            }
        );
        // Not before its whole minute has left the hour.
        assert!(matches!(
            w.check(&lim, A, 1, t0 + HOUR_MS + 100),
            Verdict::Hold { .. }
        ));
        // An hour (and the minute) later the hour is free, the day is not.
        let t1 = t0 + HOUR_MS + MINUTE_MS;
        for i in 0..7 {
            let to = format!("+1555766{i:04}");
            assert_eq!(w.check(&lim, &to, 1, t1 + i), Verdict::Send, "{i}");
            w.record(t1 + i, &to, 1);
        }
        assert_eq!(
            w.check(&lim, "+15557669999", 1, t1 + 8),
            Verdict::Hold {
                limit: Limit::PerDay,
                max: 15,
                until_ms: Some(t0 + MINUTE_MS + DAY_MS)
            }
        );
        // A day later everything is forgotten, in memory too.
        assert_eq!(w.check(&lim, B, 1, t1 + MINUTE_MS + DAY_MS), Verdict::Send);
        assert_eq!(w.entries(), 0);
        // Larger than the limit itself: held with no time it would fit.
        assert_eq!(
            SendWindow::new(true).check(&lim, A, 5, t0),
            Verdict::Hold {
                limit: Limit::PerRecipientPerHour,
                max: 4,
                until_ms: None
            }
        );
    }

    #[test]
    fn rebuild_order_does_not_matter() {
        let mut w = SendWindow::new(true);
        for i in (0..500).rev() {
            w.record(DAY_MS + i * 1000, A, 10);
        }
        let lim = OutboundLimits::default();
        assert!(matches!(
            w.check(&lim, A, 1, DAY_MS + 600_000),
            Verdict::Hold {
                limit: Limit::PerRecipientPerHour,
                ..
            }
        ));
        // 500 sends over 500 s: nine minutes, for the account and for A.
        assert_eq!(w.entries(), 2 * 9);
    }

    /// Issue 20 item 6: a day of a million sends is 1,440 entries for the account,
    /// and each recipient's only the last hour's minutes; not one entry per send.
    #[test]
    fn memory_is_bounded_by_the_spans_not_the_sends() {
        let now = 100 * DAY_MS;
        let mut w = SendWindow::new(true);
        let sends = 1_000_000u64;
        for i in 0..sends {
            let at = now - DAY_MS + 1 + i * (DAY_MS - 1) / sends;
            w.record(at, &format!("+1555{:07}", i % 10_000), 1);
        }
        let lim = OutboundLimits {
            per_hour: 0,
            per_day: 2_000_000,
            per_recipient_per_hour: 1_000,
        };
        assert_eq!(w.check(&lim, A, 1, now), Verdict::Send);
        let account = 1_441; // the day's minutes (the first one partly)
        let per_recipient = 10_000 * 61; // each of 10,000 recipients: the hour's minutes
        assert!(w.entries() <= account + per_recipient, "{}", w.entries());
        // Without a per-recipient limit, the account's minutes only.
        let mut w = SendWindow::new(false);
        for i in 0..sends {
            w.record(now - DAY_MS + 1 + i * (DAY_MS - 1) / sends, A, 1);
        }
        assert!(w.entries() <= account, "{}", w.entries());
    }

    #[test]
    fn windows_keep_nothing_while_every_limit_is_0() {
        let none = OutboundLimits {
            per_hour: 0,
            per_day: 0,
            per_recipient_per_hour: 0,
        };
        let t = 10 * DAY_MS;
        let mut ws = SendWindows::default();
        let mut filled = 0;
        for i in 0..10_000 {
            let v = ws.check("acct", &none, A, 1, t + i, |_| filled += 1);
            assert_eq!(v, Verdict::Send);
            ws.record("acct", t + i, A, 1);
        }
        // Nothing read from the sent log and nothing kept.
        assert_eq!(filled, 0);
        assert!(ws.window("acct").is_none());

        // A limit set later (a reload): the window is built from the log once, and
        // counts what went before.
        let hourly = OutboundLimits {
            per_hour: 3,
            ..none
        };
        let history = |w: &mut SendWindow| {
            for i in 0..3 {
                w.record(t + i, B, 1);
            }
        };
        assert!(matches!(
            ws.check("acct", &hourly, A, 1, t + 10_000, history),
            Verdict::Hold {
                limit: Limit::PerHour,
                ..
            }
        ));
        assert!(!ws.window("acct").is_some_and(SendWindow::tracks_recipients));
        // Recorded sends go to the kept window; it is not rebuilt while it serves.
        ws.record("acct", t + 10_001, B, 1);
        let mut rebuilt = false;
        let v = ws.check("acct", &hourly, A, 1, t + 10_002, |_| rebuilt = true);
        assert!(matches!(v, Verdict::Hold { .. }) && !rebuilt);
        // Turning the per-recipient limit on rebuilds it with recipients.
        let per_recipient = OutboundLimits {
            per_recipient_per_hour: 2,
            ..none
        };
        let v = ws.check("acct", &per_recipient, B, 1, t + 10_003, |w| {
            w.record(t, B, 1);
            w.record(t + 1, B, 1);
        });
        assert!(matches!(
            v,
            Verdict::Hold {
                limit: Limit::PerRecipientPerHour,
                ..
            }
        ));
        assert!(ws.window("acct").is_some_and(SendWindow::tracks_recipients));
        // And back to 0: the memory goes.
        assert_eq!(
            ws.check("acct", &none, B, 1, t + 10_004, |_| {}),
            Verdict::Send
        );
        assert!(ws.window("acct").is_none());
    }

    #[test]
    fn inbound_table() {
        let t = 100 * MINUTE_MS;
        let cases: &[(&[u64], u32, u64, Option<u64>)] = &[
            (&[], 30, t, None),
            (&[t - 1000, t - 500], 2, t, Some(t - 1000 + MINUTE_MS)),
            (&[t - 1000, t - 500], 3, t, None),
            (&[t - MINUTE_MS, t - 500], 2, t, None),
            (
                &[t - 3000, t - 2000, t - 1000],
                2,
                t,
                Some(t - 2000 + MINUTE_MS),
            ),
            (&[t - 1000], 0, t, None),
        ];
        for (history, limit, now, want) in cases {
            assert_eq!(
                inbound_release_at(history, *limit, *now),
                *want,
                "{history:?} {limit}"
            );
        }
    }
}
