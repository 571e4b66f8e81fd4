//! Spending guardrails: how many SMS segments an account may send per hour, per day
//! and per recipient per hour (`outboundLimits`), and how fast one approved sender's
//! texts may reach the agent (`inboundLimits.perSenderPerMinute`).
//!
//! An agent in a loop must not run up the bill, and one phone must not run up the
//! agent's model bill; but nothing is ever dropped: a send over a limit is held
//! (durably, by the caller) and an inbound text over its rate waits. The windows are
//! sliding; the decisions are pure functions of what was sent when.

use std::collections::VecDeque;

/// `inboundLimits.perSenderPerMinute` by default (as OpenClaw's channel has).
pub const DEFAULT_INBOUND_PER_MINUTE: u32 = 30;

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

/// Which limit a send would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    PerHour,
    PerDay,
    PerRecipientPerHour,
}

impl Limit {
    /// The config key, for messages.
    pub fn key(self) -> &'static str {
        match self {
            Limit::PerHour => "outboundLimits.perHour",
            Limit::PerDay => "outboundLimits.perDay",
            Limit::PerRecipientPerHour => "outboundLimits.perRecipientPerHour",
        }
    }
}

/// The verdict on one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Over `limit` (`max` segments); the window has room again at `until_ms` (for
    /// `releaseHeld: "auto"`), or never for a send larger than the limit itself.
    Hold {
        limit: Limit,
        max: u32,
        until_ms: Option<u64>,
    },
}

/// One account's sends in the last day: (time, recipient, segments), oldest first.
#[derive(Debug, Clone, Default)]
pub struct SendWindow {
    sends: VecDeque<(u64, String, u32)>,
}

impl SendWindow {
    /// Records a send that went out (rebuilt at start from the finished sends).
    pub fn record(&mut self, at_ms: u64, to: &str, segments: u32) {
        // Keep the order even when records come in out of order (a rebuild).
        let pos = self.sends.partition_point(|(t, _, _)| *t <= at_ms);
        self.sends.insert(pos, (at_ms, to.to_string(), segments));
    }

    fn forget_before(&mut self, now: u64) {
        while self
            .sends
            .front()
            .is_some_and(|(t, _, _)| t + DAY_MS <= now)
        {
            self.sends.pop_front();
        }
    }

    /// Whether a send of `segments` to `to` fits at `now`; forgets what is older than
    /// a day.
    pub fn check(&mut self, limits: &OutboundLimits, to: &str, segments: u32, now: u64) -> Verdict {
        self.forget_before(now);
        let checks = [
            (
                Limit::PerRecipientPerHour,
                limits.per_recipient_per_hour,
                HOUR_MS,
                Some(to),
            ),
            (Limit::PerHour, limits.per_hour, HOUR_MS, None),
            (Limit::PerDay, limits.per_day, DAY_MS, None),
        ];
        for (limit, max, span, only) in checks {
            if max == 0 {
                continue;
            }
            let counted: Vec<(u64, u32)> = self
                .sends
                .iter()
                .filter(|(t, r, _)| t + span > now && only.is_none_or(|o| o == r))
                .map(|(t, _, n)| (*t, *n))
                .collect();
            let used: u32 = counted.iter().map(|(_, n)| n).sum();
            if used.saturating_add(segments) <= max {
                continue;
            }
            // When enough of the window has slid out for this send to fit.
            let until_ms = if segments > max {
                None
            } else {
                let mut freed = 0u32;
                let need = used + segments - max;
                counted.iter().find_map(|(t, n)| {
                    freed += n;
                    (freed >= need).then_some(t + span)
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

/// When the next text from one sender may reach the agent, given when the earlier ones
/// did (oldest first) and the per-minute limit (0: no limit): `None` means now.
pub fn inbound_release_at(delivered_ms: &[u64], per_minute: u32, now: u64) -> Option<u64> {
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
        let t0 = 10 * DAY_MS;
        let mut w = SendWindow::default();
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
                until_ms: Some(t0 + HOUR_MS)
            }
        );
        // B is someone else: fine, until the account's hour is full (segments count).
        assert_eq!(w.check(&lim, B, 3, t0 + 10), Verdict::Send);
        w.record(t0 + 10, B, 3);
        assert_eq!(w.check(&lim, B, 1, t0 + 11), Verdict::Send);
        w.record(t0 + 11, B, 1);
        // 8 used this hour; a 3-segment text (to a third person, whose own hour is
        // empty) needs 1 more freed: the first send's slot.
        assert_eq!(
            w.check(&lim, "+15557650003", 3, t0 + 12),
            Verdict::Hold {
                limit: Limit::PerHour,
                max: 10,
                until_ms: Some(t0 + HOUR_MS)
            }
        );
        // An hour later the hour is free, the day is not.
        let t1 = t0 + HOUR_MS + 20;
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
                until_ms: Some(t0 + DAY_MS)
            }
        );
        // A day later everything is forgotten.
        assert_eq!(w.check(&lim, B, 1, t1 + DAY_MS), Verdict::Send);
        // Larger than the limit itself: held with no time it would fit.
        assert_eq!(
            SendWindow::default().check(&lim, A, 5, t0),
            Verdict::Hold {
                limit: Limit::PerRecipientPerHour,
                max: 4,
                until_ms: None
            }
        );
    }

    #[test]
    fn zero_means_no_limit_and_rebuild_order_does_not_matter() {
        let none = OutboundLimits {
            per_hour: 0,
            per_day: 0,
            per_recipient_per_hour: 0,
        };
        let mut w = SendWindow::default();
        for i in (0..500).rev() {
            w.record(DAY_MS + i, A, 10);
        }
        assert_eq!(w.check(&none, A, 10, DAY_MS + 600), Verdict::Send);
        let lim = OutboundLimits::default();
        assert!(matches!(
            w.check(&lim, A, 1, DAY_MS + 600),
            Verdict::Hold {
                limit: Limit::PerRecipientPerHour,
                ..
            }
        ));
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
