//! Log output: text or JSON on stderr; no timestamps under journald, which adds its own.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `SMSGATE_LOG` (or `RUST_LOG`) overrides the level.
pub fn init(settings: &LogSettings) {
    let directive = std::env::var("SMSGATE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| settings.level.clone());
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match (settings.format, journald) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
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
pub fn suppressed(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar lines suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn suppressed_names_the_count_only_when_something_was_dropped() {
        assert_eq!(suppressed(0), "");
        assert_eq!(suppressed(4999), " (4999 similar lines suppressed)");
    }
}
