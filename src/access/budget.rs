//! How many SMS-costing automatic texts (pairing codes) may go out: per sender and per
//! account, over sliding windows. Pure; the store keeps the history, so a restart does
//! not reset it.

/// At most this many pairing texts to one number per day.
pub(crate) const PER_SENDER_PER_DAY: usize = 3;
/// At most this many pairing texts per account per hour.
pub(crate) const PER_ACCOUNT_PER_HOUR: usize = 20;
pub(crate) const DAY_MS: u64 = 24 * 60 * 60 * 1000;
pub(crate) const HOUR_MS: u64 = 60 * 60 * 1000;

/// Whether another pairing text may go out, given when earlier ones went to this
/// sender and to anyone on this account (milliseconds since the epoch).
pub(crate) fn allows(
    sender_history: &[u64],
    account_history: &[u64],
    now: u64,
) -> Result<(), &'static str> {
    let within = |h: &[u64], window: u64| {
        h.iter()
            .filter(|&&t| now.saturating_sub(t) < window)
            .count()
    };
    if within(sender_history, DAY_MS) >= PER_SENDER_PER_DAY {
        return Err("this number already got 3 pairing texts in the last 24 hours");
    }
    if within(account_history, HOUR_MS) >= PER_ACCOUNT_PER_HOUR {
        return Err("this account already sent 20 pairing texts in the last hour");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_table() {
        let now = 10 * DAY_MS;
        let recent = now - 1000;
        let old = now - DAY_MS - 1;
        let cases: Vec<(Vec<u64>, Vec<u64>, bool)> = vec![
            (vec![], vec![], true),
            (vec![recent, recent], vec![recent, recent], true),
            (vec![recent; 3], vec![recent; 3], false),
            (vec![old; 5], vec![old; 5], true),
            (vec![], vec![recent; 20], false),
            (vec![], vec![now - HOUR_MS - 1; 20], true),
        ];
        for (i, (s, a, ok)) in cases.into_iter().enumerate() {
            assert_eq!(allows(&s, &a, now).is_ok(), ok, "case {i}");
        }
    }
}
