//! Keeping secrets out of what config errors and diffs show.
//!
//! A config that does not parse has no resolved values to hide, yet the parser's
//! message quotes the offending source line: `authToken: s3cr3t,` (unquoted) or an
//! unterminated `"s3cr3t` would be echoed into `config validate`, `channels status` and
//! the daemon's log after a SIGHUP. So source excerpts are rebuilt here from the text
//! with the value of every secret key masked ([`secret_spans`], a small JSON5 scanner
//! that needs no successful parse), and every message is also scrubbed of any value
//! equal to a secret resolved earlier in this process ([`scrub_known`]).

use std::sync::Mutex;

use crate::secret::Secret;

/// What a masked value shows.
pub(crate) const MASK: &str = "***";

/// Whether a config key holds a secret: `authToken`, `previousAuthTokens`,
/// `webhookSigningKeys`, and, so a future or misspelt key (`authTokn`) is covered by its
/// name, any key containing `token`, `secret`, `password` or `auth`, or ending in
/// `key(s)` (case-insensitive). `keyFile` (a path) is not a secret.
pub(crate) fn is_secret_key(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["token", "secret", "password", "auth"]
        .iter()
        .any(|w| n.contains(w))
        || n.trim_end_matches('s').ends_with("key")
}

/// Whether a dotted key path (`channels.sms.webhookSigningKeys.k1`,
/// `previousAuthTokens[0]`) is inside a secret.
pub(crate) fn is_secret_path(path: &str) -> bool {
    path.split(['.', '['])
        .map(|seg| seg.trim_end_matches(']'))
        .any(is_secret_key)
}

/// Byte ranges of `text` that are the values of secret keys: a string (to its closing
/// quote, or to the end of the line when unterminated), a list or object (to its
/// matching bracket, or the end of the text), or a bare word (to `,`, `}`, `]`, a
/// comment or the end of the line). Works on text that does not parse.
pub(crate) fn secret_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    // The last string or identifier seen, if nothing but blanks followed it: a key
    // candidate for the next ':'.
    let mut candidate: Option<(usize, usize)> = None;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') || b.get(i + 1) == Some(&b'*') => {
                i = skip_comment(b, i);
            }
            b'"' | b'\'' => {
                let end = string_end(b, i);
                candidate = Some((i + 1, end.saturating_sub(1).max(i + 1)));
                i = end;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$')
                {
                    i += 1;
                }
                candidate = Some((start, i));
            }
            b':' => {
                let key = candidate
                    .take()
                    .and_then(|(s, e)| std::str::from_utf8(&b[s..e.max(s)]).ok());
                i += 1;
                if key.is_some_and(is_secret_key) {
                    let start = skip_blank(b, i);
                    let end = value_end(b, start);
                    if end > start {
                        spans.push((start, end));
                    }
                    i = end.max(i);
                }
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                candidate = None;
                i += 1;
            }
        }
    }
    spans
}

/// Past the comment starting at `i` (`//` to the end of the line, `/* */`).
fn skip_comment(b: &[u8], i: usize) -> usize {
    if b.get(i + 1) == Some(&b'/') {
        b[i..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |p| i + p)
    } else {
        b[i + 2..]
            .windows(2)
            .position(|w| w == b"*/")
            .map_or(b.len(), |p| i + 2 + p + 2)
    }
}

/// Past whitespace and comments.
fn skip_blank(b: &[u8], mut i: usize) -> usize {
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) == Some(&b'/') && matches!(b.get(i + 1), Some(b'/' | b'*')) {
            i = skip_comment(b, i);
        } else {
            return i;
        }
    }
}

/// Past the string starting with the quote at `i`: after its closing quote, or at the
/// end of the line when it has none (JSON5 strings do not span lines unescaped).
fn string_end(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'\n' => return j,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// Past the value starting at `i`.
fn value_end(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        None => i,
        Some(b'"' | b'\'') => string_end(b, i),
        Some(b'[' | b'{') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' | b'\'' => {
                        j = string_end(b, j);
                        continue;
                    }
                    b'/' if matches!(b.get(j + 1), Some(b'/' | b'*')) => {
                        j = skip_comment(b, j);
                        continue;
                    }
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            b.len()
        }
        Some(_) => {
            let mut j = i;
            while j < b.len()
                && !matches!(b[j], b',' | b'}' | b']' | b'\n' | b'\r')
                && !(b[j] == b'/' && matches!(b.get(j + 1), Some(b'/' | b'*')))
            {
                j += 1;
            }
            while j > i && b[j - 1].is_ascii_whitespace() {
                j -= 1;
            }
            j
        }
    }
}

/// Line `line` (1-based) of `text`, with secret values masked; `None` past the end.
pub(crate) fn masked_line(text: &str, line: usize) -> Option<String> {
    let start = if line <= 1 {
        0
    } else {
        text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)?
    };
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let spans = secret_spans(text);
    let mut out = String::new();
    let mut at = start;
    for &(s, e) in &spans {
        if e <= start || s >= end {
            continue;
        }
        let (s, e) = (s.max(start), e.min(end));
        out.push_str(&text[at..s.max(at)]);
        if !out.ends_with(MASK) {
            out.push_str(MASK);
        }
        at = e.max(at);
    }
    out.push_str(&text[at..end]);
    Some(out.trim_end_matches('\r').to_string())
}

/// A JSON5 syntax error as a one-line message (where, and what was expected, in an
/// operator's words) plus the offending source line with secrets masked.
pub(crate) fn syntax_error(text: &str, error: &json5::Error) -> String {
    let what = match error.code() {
        Some(code) => describe_syntax(code),
        // Only number conversions use free text, and they never quote the source.
        None => error.to_string(),
    };
    // Errors at the end of the text carry no position: they are at the end.
    let (line, column) = match error.position() {
        Some(p) => (p.line + 1, p.column + 1),
        None => {
            let line = text.matches('\n').count() + 1;
            let last = text.rsplit('\n').next().unwrap_or("");
            (line, last.chars().count() + 1)
        }
    };
    let mut what = what;
    // A missing comma is found at the next key, usually on the next line: say where the
    // comma goes.
    let at_line_start = text
        .lines()
        .nth(line - 1)
        .is_some_and(|l| l.chars().take(column - 1).all(char::is_whitespace));
    if error.code() == Some(json5::ErrorCode::ExpectedComma) && at_line_start && line > 1 {
        what.push_str(&format!(
            " (a comma may be missing at the end of line {})",
            line - 1
        ));
    }
    let mut out = format!("line {line}, column {column}: {what}");
    if let Some(src) = masked_line(text, line) {
        let src: String = src.chars().take(200).collect();
        out.push_str(&format!("\n  {line:>4} | {src}"));
    }
    out
}

/// What a parser error code means, and the usual cause.
fn describe_syntax(code: json5::ErrorCode) -> String {
    use json5::ErrorCode as C;
    match code {
        C::ExpectedComma => "expected `,` or a closing `}`/`]` after the value before it: is a comma missing, or a string not quoted?",
        C::ExpectedColon => "expected `:` after the key",
        C::ExpectedIdentifier | C::InvalidKey => "expected a key: a name such as dmPolicy, or a quoted string",
        C::ExpectedValue | C::ExpectedStringOrObject => "expected a value: a \"quoted string\", a number, true, false, null, an { object } or a [ list ] (text needs quotes)",
        C::ExpectedClosingBrace => "expected `}` to close the object",
        C::ExpectedClosingBracket => "expected `]` to close the list",
        C::ExpectedOpeningBrace => "expected `{` to open an object",
        C::ExpectedOpeningBracket => "expected `[` to open a list",
        C::ExpectedString => "expected a quoted string",
        C::ExpectedNumber => "expected a number (a phone number is a string: \"+15551234567\")",
        C::ExpectedBool => "expected true or false",
        C::ExpectedNull => "expected null",
        C::ExpectedComment => "expected a comment after `/`: write // to the end of the line, or /* … */",
        C::EofParsingObject => "the file ends inside an object: expected `}` (or `,` and another key)",
        C::EofParsingArray => "the file ends inside a list: expected `]`",
        C::EofParsingString => "the file ends inside a string: expected its closing quote",
        C::EofParsingComment => "the file ends inside a /* comment: expected `*/`",
        C::EofParsingEscapeSequence => "the file ends inside an escape sequence",
        C::EofParsingIdentifier => "the file ends inside a key: expected `:` and a value",
        C::EofParsingValue | C::EofParsingNull | C::EofParsingBool | C::EofParsingNumber => "the file ends where a value was expected",
        C::InvalidEscapeSequence => "invalid escape sequence in a string: write \\\\ for a backslash",
        C::LineTerminatorInString => "a string runs to the end of the line: expected its closing quote",
        C::LeadingZero => "a number cannot start with 0: quote it (phone numbers are strings: \"+15551234567\")",
        C::OverflowParsingNumber => "the number is too large",
        C::InvalidBytes => "invalid characters: the file must be UTF-8 text",
        C::TrailingCharacters => "expected the end of the file after the closing `}`: the file holds one object",
    }
    .to_string()
}

/// Secrets resolved in this process (the running configuration's, in the daemon):
/// any text shown about a later config, valid or not, is scrubbed of them.
static KNOWN: Mutex<Vec<Secret>> = Mutex::new(Vec::new());
/// Enough for every token of a large config across reloads; the oldest go first.
const MAX_KNOWN: usize = 256;
/// Shorter values would garble messages (a test token "x"); real ones are 32 characters.
const MIN_SCRUB_LEN: usize = 6;

/// Remembers a resolved secret for [`scrub_known`].
pub(crate) fn remember(secret: &Secret) {
    if secret.expose().len() < MIN_SCRUB_LEN {
        return;
    }
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if !known.contains(secret) {
        if known.len() >= MAX_KNOWN {
            known.remove(0);
        }
        known.push(secret.clone());
    }
}

/// `text` with every remembered secret, and each of `extra`, replaced by [`MASK`].
pub(crate) fn scrub_known(text: &str, extra: &[&str]) -> String {
    let known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    let extra = extra.iter().filter(|s| s.len() >= MIN_SCRUB_LEN);
    for s in known.iter().map(Secret::expose).chain(extra.copied()) {
        if out.contains(s) {
            out = out.replace(s, MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for k in [
            "authToken",
            "previousAuthTokens",
            "webhookSigningKeys",
            "apiKey",
            "clientSecret",
            "dbPassword",
            "AUTHTOKEN",
            "authTokn",
            "tokenValue",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "keyFile",
            "certFile",
            "accountSid",
            "fromNumber",
            "webhookPath",
            "id",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
        assert!(is_secret_path("channels.sms.webhookSigningKeys.k1"));
        assert!(is_secret_path("channels.sms.previousAuthTokens[0]"));
        assert!(!is_secret_path("gateway.tls.keyFile"));
    }

    /// Each line of a broken config, masked: no secret value survives, everything else
    /// does.
    #[test]
    fn masked_lines_table() {
        let cases: Vec<(&str, usize, &str)> = vec![
            (
                "{ authToken: s3cr3t-value, x: 1 }",
                1,
                "{ authToken: ***, x: 1 }",
            ),
            ("{\n  authToken: \"s3cr3t-value\n}", 2, "  authToken: ***"),
            ("{\n  authToken: 's3cr3t',\n}", 2, "  authToken: ***,"),
            (
                "{\n  \"authToken\": \"s3cr3t\",\n}",
                2,
                "  \"authToken\": ***,",
            ),
            ("{\n  authToken:\n    s3cr3t,\n}", 3, "    ***,"),
            (
                "{\n  authToken: /* c */ s3cr3t // x\n}",
                2,
                "  authToken: /* c */ *** // x",
            ),
            (
                "{\n  previousAuthTokens: [\"a1\",\n  \"b2\"],\n}",
                3,
                "***,",
            ),
            (
                "{\n  previousAuthTokens: [\"a1\",\n  \"b2\"],\n}",
                2,
                "  previousAuthTokens: ***",
            ),
            (
                "{ webhookSigningKeys: { k1: 'abc' }, dmPolicy: 'open' }",
                1,
                "{ webhookSigningKeys: ***, dmPolicy: 'open' }",
            ),
            ("{ clientSecret: 12345 }", 1, "{ clientSecret: *** }"),
            ("{ dbPassword: hunter22 ,", 1, "{ dbPassword: *** ,"),
            ("{ keyFile: /etc/k.pem }", 1, "{ keyFile: /etc/k.pem }"),
            (
                "{ note: 'authToken: s3cr3t' }",
                1,
                "{ note: 'authToken: s3cr3t' }",
            ),
            ("{ a: 1,\n b: 2 }", 2, " b: 2 }"),
        ];
        for (text, line, want) in cases {
            assert_eq!(masked_line(text, line).as_deref(), Some(want), "{text:?}");
        }
        assert_eq!(masked_line("{}", 3), None);
    }

    #[test]
    fn syntax_errors_never_quote_a_secret() {
        let broken = [
            "{\n  channels: { sms: {\n    authToken: s3cr3t-tok3n-value,\n  } },\n}\n",
            "{\n  channels: { sms: {\n    authToken: \"s3cr3t-tok3n-value\n  } },\n}\n",
            "{\n  channels: { sms: {\n    authToken: 's3cr3t-tok3n-value\" } } }",
            "{ channels: { sms: { previousAuthTokens: [s3cr3t-tok3n-value] } } }",
            "{ channels: { sms: { webhookSigningKeys: { k: s3cr3t-tok3n-value } } } }",
            "{ channels: { sms: { authToken: \"ok\", x: s3cr3t-tok3n-value@ } } }",
            "{ channels: { sms: { authToken:\n s3cr3t-tok3n-value } } }",
        ];
        for text in broken {
            let e = match json5::from_str::<serde_json::Value>(text) {
                Err(e) => e,
                Ok(_) => panic!("parses: {text:?}"),
            };
            let raw = e.to_string();
            let shown = syntax_error(text, &e);
            if text.contains("x: s3cr3t") {
                // Not under a secret key: shown as it is.
                assert!(shown.contains("s3cr3t"), "{shown}");
                continue;
            }
            assert!(
                !shown.contains("s3cr3t"),
                "{text:?} -> {shown}\n(raw: {raw})"
            );
            assert!(shown.starts_with("line "), "{shown}");
        }
    }

    #[test]
    fn scrubbing_remembered_secrets() {
        remember(&Secret::new("remembered-secret-1"));
        remember(&Secret::new("x"));
        assert_eq!(
            scrub_known("a remembered-secret-1 b extra-secret x", &["extra-secret"]),
            "a *** b *** x"
        );
    }
}
