//! Log output: text or JSON on stderr; no timestamps under journald, which adds its own.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `SMSGATE_LOG` (or `RUST_LOG`) overrides the level.
pub(crate) fn init(settings: &LogSettings) {
    let directive = std::env::var("SMSGATE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| settings.level.clone());
    let directive = with_quiet_libraries(&directive_for(&directive));
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(use_ansi(
            std::env::var_os("NO_COLOR").as_deref(),
            std::io::stderr().is_terminal(),
        ));
    let result = match (settings.format, journald) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// A value's name for a log line, as the JSON output and the docs spell it
/// (`unknown`, `pairingCode`, `reply`), instead of a Rust `Debug` dump
/// (`Unknown`, `Reply { message_id: "…" }`): a string as it is, an internally tagged
/// enum by its `kind`, anything else as compact JSON.
pub(crate) fn label<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(o)) => match o.get("kind") {
            Some(serde_json::Value::String(k)) => k.clone(),
            _ => serde_json::Value::Object(o).to_string(),
        },
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything but the
/// empty string (<https://no-color.org>).
pub(crate) fn use_ansi(no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// A bare level (what `gateway.log.level` and usually `SMSGATE_LOG` hold) is smsgate's
/// own; its dependencies stay at `warn` (sled, reqwest and the rest say nothing an
/// operator needs at info or debug), or at the level itself when it is stricter. A
/// full directive (`info,sled=debug`) is taken as it is.
pub(crate) fn directive_for(level: &str) -> String {
    let level = level.trim();
    if level.is_empty() || level.contains(['=', ',', '[', ':']) {
        return level.to_string();
    }
    match level.to_ascii_lowercase().as_str() {
        "error" | "off" => level.to_string(),
        _ => format!("warn,smsgate={level}"),
    }
}

/// Libraries that log at warn level per connection on what the peer did (h2 when a
/// client resets too many streams, rustls on a bad handshake): an outsider could make
/// each of them write a line per connection, unbounded. smsgate logs what matters about
/// connections itself, rate-limited ([`crate::http::serve`]).
const QUIET_LIBRARIES: &[&str] = &["h2", "hyper", "hyper_util", "rustls", "tokio_rustls"];

/// `directive` with the [`QUIET_LIBRARIES`] at `error`, unless it names them itself
/// (`SMSGATE_LOG=info,h2=debug` still shows h2's lines).
pub(crate) fn with_quiet_libraries(directive: &str) -> String {
    let named = |lib: &str| {
        directive
            .split(',')
            .any(|d| d.trim().split(['=', '[', ':']).next() == Some(lib))
    };
    let mut out = directive.to_string();
    for lib in QUIET_LIBRARIES {
        if !named(lib) {
            out.push_str(&format!(",{lib}=error"));
        }
    }
    out
}

/// Lets through at most `per_second` lines a second; the rest are counted and reported
/// in the next line that gets through. A flood of bad requests must not fill the disk.
pub struct LogLimiter {
    per_second: u64,
    /// (current second, lines this second, suppressed since the last line let through)
    state: std::sync::Mutex<(u64, u64, u64)>,
}

impl LogLimiter {
    pub fn new(per_second: u64) -> Self {
        Self {
            per_second,
            state: std::sync::Mutex::new((0, 0, 0)),
        }
    }

    /// `Some(suppressed)` when a line may be written now, with how many were dropped
    /// before it; `None` when this one is dropped.
    pub fn allow(&self, now_secs: u64) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.0 != now_secs {
            s.0 = now_secs;
            s.1 = 0;
        }
        if s.1 >= self.per_second {
            s.2 += 1;
            return None;
        }
        s.1 += 1;
        Some(std::mem::take(&mut s.2))
    }

    /// [`Self::allow`] at the current wall-clock second.
    pub fn allow_now(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.allow(now)
    }
}

/// The tail of a rate-limited line: `" (N similar lines suppressed)"`, or nothing.
pub(crate) fn suppressed(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar lines suppressed)")
    }
}

/// An error with its causes, `outer: cause: root cause` (reqwest's own text is only
/// "error sending request for url (…)"; the causes say "connection refused", "dns
/// error" or a TLS problem). A cause already in the text is not repeated.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        let cases = [
            (None, true, true),
            (None, false, false),
            (Some(OsStr::new("1")), true, false),
            (Some(OsStr::new("yes")), false, false),
            // An empty NO_COLOR does not count (no-color.org).
            (Some(OsStr::new("")), true, true),
        ];
        for (no_color, terminal, want) in cases {
            assert_eq!(
                use_ansi(no_color, terminal),
                want,
                "{no_color:?} {terminal}"
            );
        }
    }

    #[test]
    fn a_bare_level_is_smsgates_and_dependencies_stay_at_warn() {
        let cases = [
            ("info", "warn,smsgate=info"),
            ("debug", "warn,smsgate=debug"),
            (" trace ", "warn,smsgate=trace"),
            ("warn", "warn,smsgate=warn"),
            ("error", "error"),
            ("off", "off"),
            ("info,sled=debug", "info,sled=debug"),
            ("smsgate=debug", "smsgate=debug"),
        ];
        for (given, want) in cases {
            assert_eq!(directive_for(given), want, "{given}");
        }
    }

    #[test]
    fn labels_are_the_documented_names_not_debug_dumps() {
        use crate::store::{OutboundState, Purpose};
        assert_eq!(label(&OutboundState::Unknown), "unknown");
        assert_eq!(label(&Purpose::PairingCode), "pairingCode");
        assert_eq!(
            label(&Purpose::Reply {
                message_id: "SM1".into()
            }),
            "reply"
        );
    }

    /// No `Debug` formatting (`?field`, `{:?}`) in an info/warn/error line anywhere in
    /// src/: values are formatted for people. Files other helpers own are listed until
    /// theirs are converted (quoted strings only there, no structures).
    #[test]
    fn no_debug_dumps_in_log_lines() {
        const PENDING: &[&str] = &["src/agent/exec.rs"];
        let mut found = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let shown = path.display().to_string();
                if path.extension().is_none_or(|e| e != "rs")
                    || PENDING.iter().any(|p| shown.ends_with(p))
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (start, _) in text.match_indices("!(") {
                    let head = &text[..start];
                    if !["info", "warn", "error"].iter().any(|m| head.ends_with(m)) {
                        continue;
                    }
                    let body = macro_body(&text[start + 2..]);
                    if has_debug(body) {
                        let line = head.matches('\n').count() + 1;
                        found.push(format!("{shown}:{line}"));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "Debug formatting in log lines: {found:#?}"
        );
    }

    /// The text up to the parenthesis that closes the macro call (strings skipped).
    fn macro_body(s: &str) -> &str {
        let (mut depth, mut in_str, mut prev) = (1, false, ' ');
        for (i, c) in s.char_indices() {
            match c {
                '"' if prev != '\\' => in_str = !in_str,
                '(' if !in_str => depth += 1,
                ')' if !in_str => {
                    depth -= 1;
                    if depth == 0 {
                        return &s[..i];
                    }
                }
                _ => {}
            }
            prev = c;
        }
        s
    }

    fn has_debug(body: &str) -> bool {
        let flat: String = body.split_whitespace().collect();
        flat.contains(":?}")
            || flat.contains(":#?}")
            || flat.contains("=?")
            || flat.contains(",?")
            || flat.starts_with('?')
    }

    #[test]
    fn the_debug_scan_sees_what_it_must() {
        assert!(has_debug(r#"state = ?state, "x""#));
        assert!(has_debug(r#""code {:?}", c"#));
        assert!(has_debug(r#"%sid, ?update, "x""#));
        assert!(!has_debug(r#"state = %label(&state), "sent {n}""#));
    }

    #[test]
    fn limiter_counts_what_it_drops() {
        let l = LogLimiter::new(2);
        assert_eq!(l.allow(1), Some(0));
        assert_eq!(l.allow(1), Some(0));
        assert_eq!(l.allow(1), None);
        assert_eq!(l.allow(1), None);
        assert_eq!(l.allow(2), Some(2));
        assert_eq!(l.allow(2), Some(0));
    }

    #[test]
    fn libraries_strangers_can_make_talk_are_quiet_unless_named() {
        let quiet = ",h2=error,hyper=error,hyper_util=error,rustls=error,tokio_rustls=error";
        let cases = [
            ("info", format!("info{quiet}")),
            ("debug", format!("debug{quiet}")),
            (
                "info,h2=debug",
                "info,h2=debug,hyper=error,hyper_util=error,rustls=error,tokio_rustls=error"
                    .to_string(),
            ),
            (
                "smsgate=debug,rustls",
                "smsgate=debug,rustls,h2=error,hyper=error,hyper_util=error,tokio_rustls=error"
                    .to_string(),
            ),
        ];
        for (given, want) in cases {
            assert_eq!(with_quiet_libraries(given), want, "{given}");
        }
    }

    #[test]
    fn suppressed_names_the_count_only_when_something_was_dropped() {
        assert_eq!(suppressed(0), "");
        assert_eq!(suppressed(4999), " (4999 similar lines suppressed)");
    }
}
