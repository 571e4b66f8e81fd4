//! The one place that reads the wall clock. Stored times are milliseconds since the
//! Unix epoch (`u64`); certificates use seconds (`i64`). Also the one reading of the
//! environment variables that override time spans ([`env_span`]).

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch, signed (certificate validity can predate 1970 in
/// principle).
pub fn now_unix() -> i64 {
    (now_ms() / 1000) as i64
}

/// A time span the environment variable `name` sets instead of the built-in one
/// (`SMSGATE_UNKNOWN_SETTLE_MS`, `SMSGATE_WHATSAPP_WINDOW_SECS`…: tests shorten them,
/// operators may tune them), in the unit its name says; `None` when unset or not a
/// whole number.
pub(crate) fn env_span(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Whole seconds since the Unix epoch, for per-second rate limits.
pub(crate) fn now_secs() -> u64 {
    now_ms() / 1000
}
