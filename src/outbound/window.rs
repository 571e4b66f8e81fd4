//! WhatsApp's customer-service window (CONTRACT §12), as pure functions: a free-form
//! message may go only within 24 hours of the person's last message; outside it, the
//! account's re-engagement template goes instead and the text is held until they
//! answer, or, without a template, the send is refused with Twilio's 63016.

/// The window's length unless `SMSGATE_WHATSAPP_WINDOW_SECS` says otherwise (tests).
pub(crate) const DEFAULT_WINDOW_SECS: u64 = 86_400;

/// Twilio's error for a free-form WhatsApp message outside the window.
pub(crate) const OUTSIDE_WINDOW: u32 = 63016;

/// How many characters of the held text the template's `{{1}}` carries.
pub(crate) const PREVIEW_CHARS: usize = 100;

/// The window in milliseconds: `SMSGATE_WHATSAPP_WINDOW_SECS` (like
/// `SMSGATE_UNKNOWN_SETTLE_MS`, so tests need not wait a day), else a day.
pub(crate) fn window_ms() -> u64 {
    crate::clock::env_span("SMSGATE_WHATSAPP_WINDOW_SECS")
        .unwrap_or(DEFAULT_WINDOW_SECS)
        .saturating_mul(1000)
}

/// What to do with one free-form WhatsApp send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Inside the window: send it.
    Send,
    /// Outside, a template is set and none is out yet: send the template, hold the text.
    Template,
    /// Outside, a template is out already (a text is held): hold this one behind it.
    Hold,
    /// Outside and no template: not sent; the author gets 63016 and its hint.
    Refuse,
}

/// Whether `now` is within `window_ms` of the person's last message. Never written
/// (no message yet): outside. A clock that went back before it: inside (Twilio, whose
/// clock decides, will say 63016 if not, and that is handled the same way).
pub(crate) fn in_window(last_inbound_ms: Option<u64>, now: u64, window_ms: u64) -> bool {
    last_inbound_ms.is_some_and(|t| now.saturating_sub(t) < window_ms)
}

/// What happens outside the window.
pub(crate) fn outside(has_template: bool, holding: bool) -> Step {
    match (holding, has_template) {
        // One template per silence: the person answers it, and everything held goes.
        (true, _) => Step::Hold,
        (false, true) => Step::Template,
        (false, false) => Step::Refuse,
    }
}

/// The whole decision for one free-form send.
pub(crate) fn step(
    last_inbound_ms: Option<u64>,
    now: u64,
    window_ms: u64,
    has_template: bool,
    holding: bool,
) -> Step {
    if in_window(last_inbound_ms, now, window_ms) {
        Step::Send
    } else {
        outside(has_template, holding)
    }
}

/// The template's `ContentVariables`: `{"1": "<first 100 characters of the text>"}`.
pub(crate) fn variables(text: &str) -> String {
    let preview: String = text.chars().take(PREVIEW_CHARS).collect();
    serde_json::json!({ "1": preview }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_table() {
        let day = DEFAULT_WINDOW_SECS * 1000;
        use Step::*;
        // (last inbound, now, template set, already holding) -> step
        let cases = [
            (Some(0), 1, false, false, Send),
            (Some(0), day - 1, false, false, Send),
            (Some(0), day, false, false, Refuse),
            (Some(0), day, true, false, Template),
            (Some(0), day, true, true, Hold),
            (Some(0), day, false, true, Hold),
            (None, 5, true, false, Template),
            (None, 5, false, false, Refuse),
            // The clock went back: inside.
            (Some(10_000), 5, false, false, Send),
            // Holding does not matter inside (a release is inside by construction).
            (Some(0), 1, true, true, Send),
        ];
        for (last, now, template, holding, want) in cases {
            assert_eq!(
                step(last, now, day, template, holding),
                want,
                "{last:?} {now} {template} {holding}"
            );
        }
    }

    #[test]
    fn variables_carry_the_first_100_characters() {
        assert_eq!(variables("hi \"you\""), r#"{"1":"hi \"you\""}"#);
        let long: String = "é".repeat(150);
        let v: serde_json::Value = serde_json::from_str(&variables(&long)).unwrap();
        assert_eq!(v["1"].as_str().unwrap().chars().count(), 100);
        assert_eq!(variables(""), r#"{"1":""}"#);
    }
}
