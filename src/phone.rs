//! E.164 phone numbers and their redaction in logs.
//!
//! Numbers are parsed once, at the edge (config, webhook, CLI), into [`E164`]; the rest
//! of the program never handles an unchecked string as a number.
//!
//! An [`E164`] is also an *address*: a number on a channel. An SMS address is the
//! number itself (`+15551234567`, as every earlier version stored it); a WhatsApp
//! address is Twilio's own form of it, `whatsapp:+15551234567` (CONTRACT §12). Keys
//! built from an address (pairing, approvals, opt-outs, conversations, limits) are
//! therefore per channel without further ado, and the address is what Twilio's `To`
//! takes. [`E164::parse`] reads SMS numbers only; [`E164::parse_address`] also reads
//! `whatsapp:`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A phone number in E.164 form: `+` and 8 to 15 digits, the first not 0 (CONTRACT §9:
/// every destination, and so every number the config, the CLI, an agent or a webhook
/// gives, is a full number; short codes and fragments like `+1555` are refused).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct E164(String);

/// The fewest digits (after `+`) an E.164 number may have here (CONTRACT §9).
pub const MIN_DIGITS: usize = 8;
/// The most digits an E.164 number has (ITU-T E.164).
pub const MAX_DIGITS: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown:?} is not an E.164 phone number{why}; write it as + and country code and number, 8 to 15 digits, e.g. +15551234567")]
pub struct PhoneError {
    pub input: String,
    /// The input as the message quotes it: cut at [`MAX_SHOWN`] characters, so a
    /// hostile agent's megabyte `to` is not echoed back whole.
    shown: String,
    /// What is wrong, as a clause (empty when it is simply not a number).
    why: Why,
}

/// The most characters of a refused input an error quotes.
const MAX_SHOWN: usize = 40;

/// What is wrong with a number, for the sentence in [`PhoneError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    NotANumber,
    /// Digits only, 3 to 8 of them: what a carrier short code looks like.
    ShortCode,
    TooShort(usize),
    TooLong(usize),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::NotANumber => Ok(()),
            Why::ShortCode => {
                f.write_str(" (it looks like a short code, and smsgate texts only full numbers)")
            }
            Why::TooShort(n) => write!(
                f,
                " (only {n} digits; short codes and partial numbers cannot be texted)"
            ),
            Why::TooLong(n) => write!(f, " ({n} digits; E.164 numbers have at most 15)"),
        }
    }
}

/// The channel a message comes or goes on (CONTRACT §12).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    #[default]
    Sms,
    Whatsapp,
}

impl Channel {
    /// As the agent's lines and the config write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
        }
    }

    /// `"sms"` or `"whatsapp"` (case-insensitive).
    pub fn parse(value: &str) -> Option<Self> {
        if value.eq_ignore_ascii_case("sms") {
            Some(Channel::Sms)
        } else if value.eq_ignore_ascii_case("whatsapp") {
            Some(Channel::Whatsapp)
        } else {
            None
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Twilio's prefix of a WhatsApp address.
pub const WHATSAPP_PREFIX: &str = "whatsapp:";

/// `input` without a leading `whatsapp:` (case-insensitive, trimmed), if it has one.
pub fn strip_whatsapp_prefix(input: &str) -> Option<&str> {
    let trimmed = input.trim();
    let head = trimmed.get(..WHATSAPP_PREFIX.len())?;
    head.eq_ignore_ascii_case(WHATSAPP_PREFIX)
        .then(|| trimmed[WHATSAPP_PREFIX.len()..].trim())
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

/// Whether `digits` (after the `+`) are 2 to 15 ASCII digits, the first not 0: the
/// shape earlier versions accepted.
fn plausible_digits(digits: &str) -> bool {
    (2..=MAX_DIGITS).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

impl E164 {
    /// Parses a number, accepting the channel prefixes. Spaces, dashes, dots and
    /// parentheses are not accepted: Twilio sends E.164 and configs should too.
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        let s = strip_channel_prefix(input);
        let err = |why| PhoneError {
            input: input.to_string(),
            shown: match input.char_indices().nth(MAX_SHOWN) {
                Some((cut, _)) => format!("{}…", &input[..cut]),
                None => input.to_string(),
            },
            why,
        };
        let Some(digits) = s.strip_prefix('+') else {
            let short_code = (3..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
            return Err(err(if short_code {
                Why::ShortCode
            } else {
                Why::NotANumber
            }));
        };
        let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        if !all_digits || digits.starts_with('0') {
            return Err(err(Why::NotANumber));
        }
        match digits.len() {
            n if n < MIN_DIGITS => Err(err(Why::TooShort(n))),
            n if n > MAX_DIGITS => Err(err(Why::TooLong(n))),
            _ => Ok(Self(s.to_string())),
        }
    }

    /// Parses an address: an SMS number as [`E164::parse`] reads it, or a WhatsApp one
    /// written `whatsapp:+15551234567`.
    pub fn parse_address(input: &str) -> Result<Self, PhoneError> {
        let Some(rest) = strip_whatsapp_prefix(input) else {
            return Self::parse(input);
        };
        let quoted = |mut e: PhoneError| {
            e.shown = match input.char_indices().nth(MAX_SHOWN) {
                Some((cut, _)) => format!("{}…", &input[..cut]),
                None => input.to_string(),
            };
            e.input = input.to_string();
            e
        };
        // `whatsapp:sms:+1…` is no address.
        if rest != strip_channel_prefix(rest) || !rest.starts_with('+') {
            return Err(quoted(not_a_number()));
        }
        Self::parse(rest)
            .map(|n| n.on(Channel::Whatsapp))
            .map_err(quoted)
    }

    /// The channel of this address.
    pub fn channel(&self) -> Channel {
        if self.0.starts_with(WHATSAPP_PREFIX) {
            Channel::Whatsapp
        } else {
            Channel::Sms
        }
    }

    pub fn is_whatsapp(&self) -> bool {
        self.channel() == Channel::Whatsapp
    }

    /// The number alone (`+…`), whatever the channel.
    pub fn number(&self) -> &str {
        self.0.strip_prefix(WHATSAPP_PREFIX).unwrap_or(&self.0)
    }

    /// The same number on `channel`.
    pub fn on(&self, channel: Channel) -> E164 {
        match channel {
            Channel::Sms => E164(self.number().to_string()),
            Channel::Whatsapp => E164(format!("{WHATSAPP_PREFIX}{}", self.number())),
        }
    }

    /// A number read back from the store. Versions before issue 22 accepted 2 to 15
    /// digits, and a stored record with such a number must still decode (else it would
    /// be quarantined and its message lost); every send re-parses its destination with
    /// [`E164::parse`], so such a number is never texted.
    fn from_stored(value: String) -> Result<Self, PhoneError> {
        match Self::parse_address(&value) {
            Ok(n) => Ok(n),
            Err(_) if value.strip_prefix('+').is_some_and(plausible_digits) => Ok(Self(value)),
            Err(e) => Err(e),
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

/// The error of an input that is not a number at all.
fn not_a_number() -> PhoneError {
    PhoneError {
        input: String::new(),
        shown: String::new(),
        why: Why::NotANumber,
    }
}

impl TryFrom<String> for E164 {
    type Error = PhoneError;
    /// Deserialising is reading the store (records carry numbers): see
    /// [`E164::from_stored`]. Everything read from outside goes through [`E164::parse`].
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::from_stored(value)
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
            // Issue 22: 8 to 15 digits; short codes and fragments are refused.
            ("+12345678", Some("+12345678")),
            ("+123456789012345", Some("+123456789012345")),
            ("+1234567", None),
            ("+1555", None),
            ("12345", None),
            ("+1555765432１", None),
            ("+15557654321\u{0}", None),
            ("whatsapp:+15557654321", None),
            ("sms:sms:+15557654321", None),
            ("sms:", None),
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
    fn errors_say_what_is_wrong() {
        let why = |input: &str| E164::parse(input).unwrap_err().to_string();
        assert!(why("12345").contains("short code"), "{}", why("12345"));
        assert!(why("+1555").contains("only 4 digits"), "{}", why("+1555"));
        assert!(why("+1234567890123456").contains("at most 15"));
        let long = why(&"9".repeat(100_000));
        assert!(long.len() < 300, "the input is cut: {}", long.len());
        for input in ["12345", "+1555", "x", "+1555-123-4567"] {
            let m = why(input);
            assert!(
                m.contains("is not an E.164 phone number") && m.contains("8 to 15 digits"),
                "{m}"
            );
        }
    }

    /// A number stored by an earlier version (2 to 7 digits were accepted) still
    /// decodes, so its record is not quarantined; parsing from outside refuses it.
    #[test]
    fn stored_short_numbers_still_decode() {
        let n: E164 = serde_json::from_str("\"+1555\"").unwrap();
        assert_eq!(n.as_str(), "+1555");
        assert!(E164::parse(n.as_str()).is_err());
        assert!(serde_json::from_str::<E164>("\"+0555\"").is_err());
        assert!(serde_json::from_str::<E164>("\"hello\"").is_err());
    }

    #[test]
    fn addresses_table() {
        type Want = Option<(&'static str, Channel, &'static str)>;
        let cases: &[(&str, Want)] = &[
            (
                "+15551234567",
                Some(("+15551234567", Channel::Sms, "+15551234567")),
            ),
            (
                "sms:+15551234567",
                Some(("+15551234567", Channel::Sms, "+15551234567")),
            ),
            (
                "whatsapp:+15551234567",
                Some(("whatsapp:+15551234567", Channel::Whatsapp, "+15551234567")),
            ),
            (
                "WhatsApp: +15551234567",
                Some(("whatsapp:+15551234567", Channel::Whatsapp, "+15551234567")),
            ),
            ("whatsapp:15551234567", None),
            ("whatsapp:sms:+15551234567", None),
            ("whatsapp:whatsapp:+15551234567", None),
            ("whatsapp:+1555", None),
            ("whatsapp:", None),
            ("whatsap", None),
        ];
        for (input, want) in cases {
            let got = E164::parse_address(input).ok();
            let got = got.as_ref().map(|a| (a.as_str(), a.channel(), a.number()));
            assert_eq!(got, *want, "input {input:?}");
        }
        let wa = E164::parse_address("whatsapp:+15551234567").unwrap();
        assert_eq!(wa.on(Channel::Sms).as_str(), "+15551234567");
        assert_eq!(wa.on(Channel::Sms).on(Channel::Whatsapp), wa);
        let stored: E164 = serde_json::from_str("\"whatsapp:+15551234567\"").unwrap();
        assert_eq!(stored, wa);
        assert_eq!(redact_str(wa.as_str()), "***4567");
        let e = E164::parse_address("whatsapp:nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("whatsapp:nope"), "{e}");
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
