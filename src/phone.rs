//! E.164 phone numbers and their redaction in logs.
//!
//! Numbers are parsed once, at the edge (config, webhook, CLI), into [`E164`]; the rest
//! of the program never handles an unchecked string as a number.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A phone number in E.164 form: `+` and 2 to 15 digits, the first not 0.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct E164(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an E.164 phone number; write it as + and country code and number, e.g. +15551234567")]
pub struct PhoneError {
    pub input: String,
}

/// Strips the `sms:` / `twilio-sms:` channel prefixes accepted wherever a number is read.
pub fn strip_channel_prefix(input: &str) -> &str {
    let trimmed = input.trim();
    for prefix in ["twilio-sms:", "sms:"] {
        // `get`, not `[..]`: a multi-byte character across the prefix's length is not a
        // char boundary, and slicing there panicked (found by the config fuzz target).
        if let Some(head) = trimmed.get(..prefix.len()) {
            if head.eq_ignore_ascii_case(prefix) {
                return trimmed[prefix.len()..].trim();
            }
        }
    }
    trimmed
}

impl E164 {
    /// Parses a number, accepting the channel prefixes. Spaces, dashes, dots and
    /// parentheses are not accepted: Twilio sends E.164 and configs should too.
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        let s = strip_channel_prefix(input);
        let err = || PhoneError {
            input: input.to_string(),
        };
        let digits = s.strip_prefix('+').ok_or_else(err)?;
        let ok = (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(err())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number as logs show it: only the last 4 digits, unless debug logging is on
    /// (an operator debugging needs the whole number; everyone else must not see it).
    pub fn redacted(&self) -> Redacted<'_> {
        Redacted(&self.0)
    }
}

impl TryFrom<String> for E164 {
    type Error = PhoneError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<E164> for String {
    fn from(value: E164) -> Self {
        value.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for E164 {
    // Debug output ends up in logs and panics, so it is redacted like log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164({})", self.redacted())
    }
}

/// Display wrapper that hides all but the last 4 digits of a number.
pub struct Redacted<'a>(&'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG {
            return f.write_str(self.0);
        }
        f.write_str(&redact_str(self.0))
    }
}

/// Redacts any string that may be a phone number to `***` and its last 4 characters.
pub fn redact_str(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() <= 4 {
        return "***".to_string();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("***{tail}")
}

/// Replaces every run that looks like a phone number (`+` and 7 or more digits) in free
/// text, such as an error message from Twilio, with its redacted form.
pub fn redact_numbers_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '+' {
            let rest = &text[i + 1..];
            let n = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
            if n >= 7 {
                out.push_str(&redact_str(&text[i..i + 1 + n]));
                for _ in 0..n {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibyte_text_where_a_prefix_would_end_is_an_error_not_a_panic() {
        for input in [
            "smé+15551234567",
            "twilio-smé",
            "sm€",
            "日本語の番号",
            "sms:日本",
        ] {
            assert!(E164::parse(input).is_err(), "{input:?}");
        }
        assert_eq!(strip_channel_prefix("twilio-smé"), "twilio-smé");
        assert_eq!(strip_channel_prefix("SMS: +1555"), "+1555");
    }

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("+15551234567", Some("+15551234567")),
            ("sms:+15551234567", Some("+15551234567")),
            ("twilio-sms:+15551234567", Some("+15551234567")),
            ("SMS:+447700900123", Some("+447700900123")),
            (" +15551234567 ", Some("+15551234567")),
            ("15551234567", None),
            ("+0123456", None),
            ("+1", None),
            ("+1234567890123456", None),
            ("+1555-123-4567", None),
            ("", None),
            ("+", None),
        ];
        for (input, want) in cases {
            let got = E164::parse(input).ok();
            assert_eq!(got.as_ref().map(E164::as_str), *want, "input {input:?}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_str("+15551234567"), "***4567");
        assert_eq!(redact_str("+12"), "***");
        assert_eq!(
            redact_numbers_in("The 'To' number +15551234567 is not valid (+1 tip)"),
            "The 'To' number ***4567 is not valid (+1 tip)"
        );
    }
}
